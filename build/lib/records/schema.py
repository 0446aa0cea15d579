"""Record schema of the regulator's individual-business (个体工商户) data.

One table per record kind; each column typed and documented here once. Ingestion,
the synthetic generator, the feature pipeline and the docs all read this module.
Sources for each table are in ``../shared/DOMAIN.md`` §2.

Personal information (operator name, address, the ID-number hash) is flagged ``pii``:
it may answer verification requests only and never feeds a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

from records.policy import never_repairable

# --- enumerations -----------------------------------------------------------------

STATUSES = ("operating", "suspended", "moved_out", "deregistered", "revoked", "cancelled")
STATUS_REASONS = ("voluntary", "authority_initiated", "licence_revoked", "registration_cancelled")
ORG_FORMS = ("individual", "family")  # 个人经营 / 家庭经营
#: GB/T 4754 sections that individual businesses register under.
INDUSTRIES = ("A", "C", "E", "F", "G", "H", "I", "L", "M", "O", "P", "R")
CHANGE_TYPES = ("operator", "address", "name", "scope", "status")
ABNORMAL_CAUSES = ("report_not_filed", "report_false", "unreachable")
RESTORE_REASONS = ("report_filed", "report_corrected", "address_registered", "objection_upheld")
PENALTY_KINDS = (
    "warning",  # 警告 — never published on its own
    "public_criticism",  # 通报批评
    "fine",  # 罚款
    "confiscation",  # 没收违法所得、非法财物
    "licence_suspension",  # 暂扣许可证件
    "licence_revocation",  # 吊销许可证件 / 营业执照
    "suspension_order",  # 责令停产停业 / 关闭
    "business_restriction",  # 限制开展生产经营活动
    "practice_ban",  # 限制从业
)
PROCEDURES = ("ordinary", "simple")
VIOLATION_TYPES = (
    "unlicensed_operation",
    "food_safety",
    "drug_safety",
    "special_equipment",
    "product_quality",
    "pricing",
    "advertising",
    "trademark",
    "measurement",
    "consumer_rights",
    "registration",
    "other",
)
SERIOUS_REASONS = ("heavy_fine", "licence_revoked", "closure_ordered", "practice_ban")
SPOT_RESULTS = ("normal", "not_publicised", "unreachable", "problems_corrected")


@dataclass(frozen=True)
class Column:
    """One column of a record table.

    Attributes:
        name: column name in exports and in the warehouse.
        type: DuckDB type (VARCHAR, DATE, INTEGER, BIGINT, DOUBLE, BOOLEAN).
        description: what the column holds.
        required: a row with a null here is quarantined.
        enum: allowed values; for ``list`` columns, allowed elements.
        list_sep: the column is a list of enum values joined by this separator.
        pii: personal information, used only for verification.
    """

    name: str
    type: str
    description: str
    required: bool = False
    enum: tuple[str, ...] | None = None
    list_sep: str | None = None
    pii: bool = False


@dataclass(frozen=True)
class Table:
    """A record table: columns, natural key, and the date-order rules it must obey."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: (later, earlier): when both are present, later >= earlier.
    date_order: tuple[tuple[str, str], ...] = ()
    #: rows reference a household by USCC that must exist.
    household_fk: bool = True
    #: further row rules: (SQL condition that is TRUE for a bad row, reason).
    checks: tuple[tuple[str, str], ...] = ()
    #: SQL over the row's own columns: the day the record first became public, taken as
    #: the day credref knew it when an export says nothing about knowledge time
    #: (``records.versions``; README "Knowledge time").
    known_since: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


USCC = Column("uscc", "VARCHAR", "Unified social credit code (GB 32100-2015), 18 chars.", True)

HOUSEHOLDS = Table(
    "households",
    "Current registration of each individual business (登记事项), one row per USCC.",
    (
        USCC,
        Column("name", "VARCHAR", "Registered name (字号 + industry); optional.", pii=True),
        Column("operator_name", "VARCHAR", "Current operator (经营者) name.", True, pii=True),
        Column(
            "operator_id_hmac",
            "VARCHAR",
            "HMAC-SHA256 (hex) of the operator's resident ID number under the in-domain "
            "secret; the raw number is never stored.",
            True,
            pii=True,
        ),
        Column("org_form", "VARCHAR", "Organisational form.", True, ORG_FORMS),
        Column("industry", "VARCHAR", "GB/T 4754 industry section.", True, INDUSTRIES),
        Column(
            "division_code",
            "VARCHAR",
            "GB/T 2260 county-level code of the registering authority.",
            True,
        ),
        Column("address", "VARCHAR", "Business premises (经营场所).", True, pii=True),
        Column("registered_on", "DATE", "Date of establishment (成立日期).", True),
        Column("status", "VARCHAR", "Current registration status.", True, STATUSES),
        Column("status_changed_on", "DATE", "Date the current status took effect."),
        Column(
            "status_reason", "VARCHAR", "Why the household left operation.", enum=STATUS_REASONS
        ),
    ),
    key=("uscc",),
    date_order=(("status_changed_on", "registered_on"),),
    household_fk=False,
    known_since="registered_on",
    checks=(
        (
            "substr(uscc, 1, 2) <> '92'",
            "uscc: not an individual household code (must start with 92)",
        ),
        ("substr(uscc, 3, 6) <> division_code", "uscc: positions 3-8 differ from division_code"),
        (
            "NOT regexp_full_match(division_code, '[1-9][0-9]{5}')",
            "division_code: not a 6-digit code",
        ),
        (
            "status <> 'operating' AND status_changed_on IS NULL",
            "status_changed_on: required when not operating",
        ),
        ("length(operator_id_hmac) <> 64", "operator_id_hmac: not a 64-hex-digit HMAC-SHA256"),
    ),
)

REGISTRATION_CHANGES = Table(
    "registration_changes",
    "Change registrations (变更登记), including status changes; values of personal "
    "fields are not exported.",
    (
        USCC,
        Column("change_type", "VARCHAR", "What changed.", True, CHANGE_TYPES),
        Column("changed_on", "DATE", "Date the change was registered.", True),
        Column("new_status", "VARCHAR", "For status changes: the new status.", enum=STATUSES),
        Column("reason", "VARCHAR", "For status changes: why.", enum=STATUS_REASONS),
    ),
    key=("uscc", "change_type", "changed_on"),
    known_since="changed_on",
)

ANNUAL_REPORTS = Table(
    "annual_reports",
    "Annual reports (年度报告), one row per household and report year that was due.",
    (
        USCC,
        Column("report_year", "INTEGER", "The year reported on (filed the next year).", True),
        Column("filed_on", "DATE", "Filing date; null if never filed."),
        Column("published", "BOOLEAN", "The household chose to publish the report content.", True),
        Column("employees", "INTEGER", "Content: number of employees (usable only if published)."),
        Column(
            "revenue_yuan", "DOUBLE", "Content: annual revenue, yuan (usable only if published)."
        ),
        Column(
            "has_online_shop", "BOOLEAN", "Content: runs an online shop (usable only if published)."
        ),
    ),
    key=("uscc", "report_year"),
    # filed on time: known when filed; otherwise the row appears the day after the deadline
    known_since="CASE WHEN filed_on <= make_date(report_year + 1, 6, 30) THEN filed_on "
    "ELSE make_date(report_year + 1, 7, 1) END",
    checks=(
        ("report_year < 1980", "report_year: before 1980"),
        (
            "filed_on IS NOT NULL AND year(filed_on) <= report_year",
            "filed_on: before the report year ended",
        ),
        (
            "filed_on IS NULL AND published",
            "published: a report that was never filed cannot be published",
        ),
    ),
)

ABNORMAL_STATUS = Table(
    "abnormal_status",
    "Abnormal-operation markings (经营异常状态) and their restoration.",
    (
        USCC,
        Column("marked_on", "DATE", "Date marked (and published).", True),
        Column("cause", "VARCHAR", "Why marked.", True, ABNORMAL_CAUSES),
        Column(
            "restored_on", "DATE", "Date restored to normal (credit repair); null if still marked."
        ),
        Column("restore_reason", "VARCHAR", "Why restored.", enum=RESTORE_REASONS),
    ),
    key=("uscc", "marked_on", "cause"),
    known_since="marked_on",
    date_order=(("restored_on", "marked_on"),),
)

PENALTIES = Table(
    "penalties",
    "Administrative penalty decisions (行政处罚). Only ordinary-procedure decisions other "
    "than a warning alone are published (SAMR Order 45).",
    (
        USCC,
        Column("decision_no", "VARCHAR", "Decision document number, unique.", True),
        Column("decided_on", "DATE", "Decision date.", True),
        Column("procedure", "VARCHAR", "Ordinary or simple procedure.", True, PROCEDURES),
        Column("published_on", "DATE", "Publication date; null if not published."),
        Column("violation_type", "VARCHAR", "Kind of violation.", True, VIOLATION_TYPES),
        Column(
            "penalty_kinds",
            "VARCHAR",
            "Penalty kinds imposed, ';'-separated.",
            True,
            PENALTY_KINDS,
            list_sep=";",
        ),
        Column("fine_yuan", "DOUBLE", "Fine amount in yuan (0 if no fine)."),
        Column("publicity_end", "DATE", "Last day of the publicity period; null if not published."),
        Column("repaired_on", "DATE", "Publicity ended early by credit repair."),
        Column("withdrawn_on", "DATE", "Decision changed or annulled; publicity withdrawn."),
    ),
    key=("decision_no",),
    known_since="COALESCE(published_on, decided_on)",
    date_order=(
        ("published_on", "decided_on"),
        ("publicity_end", "published_on"),
        ("repaired_on", "published_on"),
        ("withdrawn_on", "published_on"),
    ),
    checks=(
        (
            "published_on IS NOT NULL AND publicity_end IS NULL",
            "publicity_end: required when published",
        ),
        ("fine_yuan < 0", "fine_yuan: negative"),
        (
            "procedure = 'simple' AND published_on IS NOT NULL",
            "published_on: simple-procedure decisions are not published",
        ),
        (
            f"repaired_on IS NOT NULL AND {never_repairable('penalty_kinds')}",
            "repaired_on: this penalty kind is never repairable",
        ),
    ),
)

SERIOUS_DISHONESTY = Table(
    "serious_dishonesty",
    "Serious illegal and dishonest list (严重违法失信名单, SAMR Order 44).",
    (
        USCC,
        Column("listed_on", "DATE", "Date listed (and published).", True),
        Column("reason", "VARCHAR", "Why listed.", True, SERIOUS_REASONS),
        Column("removed_on", "DATE", "Date removed (early, or after 3 years)."),
    ),
    key=("uscc", "listed_on"),
    known_since="listed_on",
    date_order=(("removed_on", "listed_on"),),
)

SPOT_CHECKS = Table(
    "spot_checks",
    "Random spot checks (双随机、一公开) and their published results.",
    (
        USCC,
        Column("checked_on", "DATE", "Date of the check.", True),
        Column("published_on", "DATE", "Date the result was published.", True),
        Column("result", "VARCHAR", "Published result.", True, SPOT_RESULTS),
    ),
    key=("uscc", "checked_on"),
    known_since="published_on",
    date_order=(("published_on", "checked_on"),),
)

#: All record tables, in load order (households first: the others reference it).
TABLES: tuple[Table, ...] = (
    HOUSEHOLDS,
    REGISTRATION_CHANGES,
    ANNUAL_REPORTS,
    ABNORMAL_STATUS,
    PENALTIES,
    SERIOUS_DISHONESTY,
    SPOT_CHECKS,
)
TABLES_BY_NAME = {t.name: t for t in TABLES}

#: Columns that hold personal information; no feature may read them.
PII_COLUMNS = frozenset((t.name, c.name) for t in TABLES for c in t.columns if c.pii)


def arrow_schema(table: Table):  # -> pyarrow.Schema
    """The Arrow schema of a table, for writers of exports."""
    import pyarrow as pa  # only exports need Arrow; the service imports this module

    to_arrow = {
        "VARCHAR": pa.string(),
        "DATE": pa.date32(),
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
    }
    return pa.schema(
        [pa.field(c.name, to_arrow[c.type], nullable=not c.required) for c in table.columns]
    )
