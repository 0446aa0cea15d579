"""The feature catalogue: the single source of truth for features and reason codes.

Training (inputs, monotone constraints), serving (inputs, reason texts), reason codes,
model cards and docs all read this module. A feature's ``monotone`` is its direction
relative to risk: +1 risk never falls as it grows, -1 risk never rises, 0 no
constraint. Every constrained feature has a reason code for its adverse direction;
related features share one. Features without a reason code (place, industry, form) can
move a score but are never given to a platform as a reason: they are not something the
household did.

A *calendar* feature (``calendar=True``) says where T stands in the reporting calendar
and what that means for the household (the day of the reporting cycle, the days of the
filing period with this year's report not yet filed): lawful states, which move
with the calendar for everyone. They sharpen the point-in-time PD and nothing else:
never a reason, never the score or the class (``scoring.model``: the score and the
class read the model with the calendar features at their average, so a household's
class moves when its records do, not with the season; DOMAIN.md §6).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

#: What the label means: the outcome every score predicts (the score guide says it).
OUTCOME = (
    "An adverse regulator record published in the 12 months after the day of the answer: a "
    "penalty above the minor kind, an abnormal-operation marking, a serious-list entry, a "
    "licence revocation or a deregistration on the authority's initiative."
)


@dataclass(frozen=True)
class Guidance:
    """What the rules let a household do about a reason, and where they say so.

    ``remedy``: ``act`` (doing something ends it: file, correct, register), ``repair``
    (credit repair once a minimum period has passed and obligations are met), ``time``
    (it ends by itself: a window or period runs out), ``never`` (not repairable), or
    ``none`` (nothing adverse)."""

    remedy: str
    text_zh: str
    text_en: str
    source: str


@dataclass(frozen=True)
class Reason:
    code: str
    text_zh: str
    text_en: str
    guidance: Guidance


@dataclass(frozen=True)
class Feature:
    name: str
    description_zh: str
    description_en: str
    source: str  # record table the feature reads
    value_type: str  # "int", "float", "bool", "category"
    monotone: int  # +1 / -1 / 0, relative to risk
    reason: str | None = None  # reason code for the adverse direction
    calendar: bool = False  # where T stands in the calendar: the PD only (see above)
    #: A feature that grows with every day (age, days since a record): the published
    #: edges of the bands the score and class read it in (``scoring.model``), so a
    #: household's class moves on the dated day its age or record enters a band, never
    #: a little every day
    bands: tuple[float, ...] = ()


_REPAIR = "市场监督管理信用修复管理办法（国市监信规〔2021〕3号）"
_PENALTY_PUBLICITY = "市场监督管理行政处罚信息公示规定（市场监管总局令第45号，2021）"
_ANNUAL_REPORT = "个体工商户年度报告暂行办法；市场主体登记管理条例实施细则"
_SERIOUS = "市场监督管理严重违法失信名单管理办法（市场监管总局令第44号，2021）"

#: Operator and premises changes count for one and two years (the features' windows).
_CHANGE_WINDOWS = Guidance(
    "time",
    "变更登记满一年、两年后不再计入。",
    "No longer counted one and two years after the change registration.",
    "credref 评分规则：变更登记的1年、2年窗口",
)

REASONS: tuple[Reason, ...] = (
    Reason(
        "R01",
        "登记成立时间较短",
        "Registered only recently",
        Guidance(
            "time",
            "随经营时间增长而减弱，无需办理任何手续。",
            "Weakens as the business ages; nothing to file.",
            "credref 评分规则：登记年限",
        ),
    ),
    Reason(
        "R02",
        "近期变更经营者",
        "Operator changed recently",
        _CHANGE_WINDOWS,
    ),
    Reason(
        "R03",
        "近期多次变更经营场所",
        "Business premises changed recently",
        _CHANGE_WINDOWS,
    ),
    Reason(
        "R04",
        "年度报告未按时报送",
        "Annual report not filed on time",
        Guidance(
            "act",
            "每年1月1日至6月30日报送上一年度年报；补报逾期年报后，因未报年报被标记的经营异常状态可申请恢复。",
            "File each year's report between 1 January and 30 June; once an overdue report "
            "is filed, a marking for not filing it can be restored on application.",
            _ANNUAL_REPORT,
        ),
    ),
    Reason(
        "R05",
        "被标记为经营异常状态",
        "Marked as operating abnormally",
        Guidance(
            "act",
            "补报或更正年报、或办理住所（经营场所）变更登记后，可申请恢复正常记载状态；恢复后该记录不再使用。",
            "File or correct the annual report, or register the new premises, then apply to "
            "be restored to normal; once restored the marking is no longer used.",
            f"{_ANNUAL_REPORT}；{_REPAIR}",
        ),
    ),
    Reason(
        "R06",
        "公示期内的行政处罚",
        "Administrative penalties in publicity",
        Guidance(
            "repair",
            "公示满6个月（食品、药品、特种设备领域满1年）且已履行处罚义务、消除不良影响、未再违法的，可申请信用修复，提前停止公示；通报批评或较低罚款公示3个月，其他处罚3年。",
            "After 6 months of publicity (1 year for food, drugs and special equipment), "
            "with the penalty's obligations met, harm remedied and no repeat, credit repair "
            "can be applied for and ends publicity early; otherwise publicity ends after 3 "
            "months (public criticism, low fines) or 3 years.",
            f"{_PENALTY_PUBLICITY}；{_REPAIR}",
        ),
    ),
    Reason(
        "R07",
        "公示期内有较重的行政处罚",
        "A severe administrative penalty in publicity",
        Guidance(
            "never",
            "责令停产停业、吊销许可证件或营业执照、限制从业等处罚不予信用修复，公示期满后不再使用。",
            "Orders to suspend or close, revoked licences or permits and practice bans "
            "cannot be repaired; the record stops counting when its publicity ends.",
            f"{_PENALTY_PUBLICITY}；{_REPAIR}",
        ),
    ),
    Reason(
        "R08",
        "列入严重违法失信名单",
        "On the serious illegal and dishonest list",
        Guidance(
            "repair",
            "列入满1年且已履行义务、消除不良影响的，可申请提前移出；否则列入满3年移出。",
            "Early removal can be applied for after 1 year on the list with obligations met "
            "and harm remedied; otherwise the listing is removed after 3 years.",
            f"{_SERIOUS}；{_REPAIR}",
        ),
    ),
    Reason(
        "R09",
        "抽查检查发现问题",
        "Problems found in spot checks",
        Guidance(
            "time",
            "按要求整改；抽查结果公示满3年后不再计入。",
            "Correct what the check found; a result stops counting 3 years after it was published.",
            "credref 评分规则：抽查结果的3年窗口（“双随机、一公开”结果公示）",
        ),
    ),
)
REASONS_BY_CODE = {r.code: r for r in REASONS}

#: What each reason's text claims, as conditions on the household's features: a reason is
#: served only when one of its conditions holds, so its text is true of the household's
#: records on the day it is served (a model may find risk in a value that is not what the
#: text says: a penalty of ordinary severity is not "severe", a 6-year-old business is not
#: "registered recently"). ``tests/test_every_day.py`` checks each claim against the
#: records themselves, every day of a year.
#: Registered less than this many years ago: "registered only recently" (R01).
RECENT_YEARS = 3.0
#: From this severity a penalty is "severe" (R07): orders to suspend or close, revoked
#: licences, bans, restrictions, fines from 100,000 yuan (``features.pit.severity``).
SEVERE_PENALTY = 3
REASON_EVIDENCE: dict[str, tuple[tuple[str, str, float], ...]] = {
    "R01": (("reg_age_years", "<", RECENT_YEARS),),
    "R02": (("operator_changes_2y", ">", 0),),
    "R03": (("address_changes_2y", ">", 0),),
    # a report whose deadline has passed, filed late or not at all (never one still due)
    "R04": (
        ("last_report_late", ">", 0),
        ("last_report_missing", ">", 0),
        ("reports_missing_3y", ">", 0),
    ),
    "R05": (("abnormal_now_report", ">", 0), ("abnormal_now_unreachable", ">", 0)),
    "R06": (("penalties_3y", ">", 0),),
    "R07": (("penalty_max_severity", ">=", SEVERE_PENALTY),),
    "R08": (("serious_listed", ">", 0),),
    "R09": (("spot_problems_3y", ">", 0),),
}
#: The answer when nothing pushes risk up.
NO_ADVERSE = Reason(
    "R00",
    "无不良记录",
    "No adverse record",
    Guidance("none", "无需办理。", "Nothing to do.", ""),
)

CATEGORIES = {
    "industry": ("A", "C", "E", "F", "G", "H", "I", "L", "M", "O", "P", "R"),
    "city": ("Suzhou", "Hangzhou", "Jinan", "Wuhan", "Changsha", "Shenzhen", "Chengdu", "Xi'an"),
}

FEATURES: tuple[Feature, ...] = (
    Feature(
        "reg_age_years",
        "登记成立年限（年）",
        "Years since registration",
        "households",
        "float",
        -1,
        "R01",
        bands=(1.0, 2.0, 3.0, 5.0, 10.0),
    ),
    Feature("org_form_family", "是否家庭经营", "Family-run (家庭经营)", "households", "bool", 0),
    Feature("industry", "行业门类", "Industry section (GB/T 4754)", "households", "category", 0),
    Feature("city", "所在城市", "Pilot city", "households", "category", 0),
    Feature(
        "operator_changes_1y",
        "近1年经营者变更次数",
        "Operator changes, last year",
        "registration_changes",
        "int",
        1,
        "R02",
    ),
    Feature(
        "operator_changes_2y",
        "近2年经营者变更次数",
        "Operator changes, last 2 years",
        "registration_changes",
        "int",
        1,
        "R02",
    ),
    Feature(
        "address_changes_1y",
        "近1年经营场所变更次数",
        "Premises changes, last year",
        "registration_changes",
        "int",
        1,
        "R03",
    ),
    Feature(
        "address_changes_2y",
        "近2年经营场所变更次数",
        "Premises changes, last 2 years",
        "registration_changes",
        "int",
        1,
        "R03",
    ),
    Feature(
        "last_report_late",
        "最近一期年报逾期报送",
        "Last due annual report filed late",
        "annual_reports",
        "bool",
        1,
        "R04",
    ),
    Feature(
        "last_report_missing",
        "最近一期年报未报送",
        "Last due annual report not filed",
        "annual_reports",
        "bool",
        1,
        "R04",
    ),
    Feature(
        "report_marking_pending",
        "最近一期年报未报送且尚未标记异常",
        "Last due report not filed and not yet marked abnormal",
        "annual_reports",
        "bool",
        1,
        "R04",
    ),
    Feature(
        "reports_missing_3y",
        "近3期年报中未报送或逾期报送数",
        "Of the last 3 due reports, those missing or filed late",
        "annual_reports",
        "int",
        1,
        "R04",
    ),
    Feature(
        "reporting_cycle_day",
        "年报周期中的第几天（8月1日为1，7月31日为365）",
        "Day of the reporting cycle: 1 on 1 August (after the July markings), 365 on 31 July",
        "as_of",
        "int",
        0,
        calendar=True,
    ),
    Feature(
        "open_report_unfiled_days",
        "本年度年报尚未报送时，报送期（1月1日–6月30日）已进行的天数（1月1日为1；报送期内未报送是合法状态）",
        "Days of this year's filing period (1 January - 30 June) with this year's report not "
        "yet filed, 1 on 1 January (lawful while the period is open); 0 once filed or outside it",
        "annual_reports",
        "int",
        1,
        calendar=True,
    ),
    Feature(
        "reported_employees",
        "近3期及本期已公示年报中最近一期的从业人数",
        "Employees in the latest published report of the last three due years and this year",
        "annual_reports",
        "float",
        0,
    ),
    Feature(
        "abnormal_now_report",
        "因年报问题处于经营异常状态",
        "Marked abnormal for the annual report",
        "abnormal_status",
        "bool",
        1,
        "R05",
    ),
    Feature(
        "abnormal_now_unreachable",
        "因无法联系处于经营异常状态",
        "Marked abnormal as unreachable",
        "abnormal_status",
        "bool",
        1,
        "R05",
    ),
    Feature(
        "abnormal_days",
        "本次经营异常已持续天数",
        "Days in the current abnormal marking",
        "abnormal_status",
        "int",
        1,
        "R05",
        bands=(90.0, 180.0, 365.0, 730.0),
    ),
    Feature(
        "penalties_1y",
        "近1年内公示且仍在公示期的行政处罚数",
        "Penalties in publicity, published in the last year",
        "penalties",
        "int",
        1,
        "R06",
    ),
    Feature(
        "penalties_3y",
        "近3年内公示且仍在公示期的行政处罚数",
        "Penalties in publicity, published in the last 3 years",
        "penalties",
        "int",
        1,
        "R06",
    ),
    Feature(
        "penalty_fines_yuan",
        "公示中的罚款总额（元）",
        "Total fines of penalties in publicity (yuan)",
        "penalties",
        "float",
        1,
        "R06",
    ),
    Feature(
        "penalty_max_severity",
        "公示中处罚的最高严重程度（0–4）",
        "Most severe penalty in publicity (0–4)",
        "penalties",
        "int",
        1,
        "R07",
    ),
    Feature(
        "penalty_recency_days",
        "距最近一次公示处罚天数（无则1095）",
        "Days since the latest penalty in publicity (1095 if none)",
        "penalties",
        "int",
        -1,
        "R06",
        # 3 months (minor publicity), 6 months and a year (repair), 2 and 3 years (publicity)
        bands=(90.0, 180.0, 365.0, 730.0, 1095.0),
    ),
    Feature(
        "penalty_violation_types",
        "公示处罚涉及的违法类型数",
        "Distinct violation types in publicity",
        "penalties",
        "int",
        1,
        "R06",
    ),
    Feature(
        "serious_listed",
        "列入严重违法失信名单",
        "On the serious illegal and dishonest list",
        "serious_dishonesty",
        "bool",
        1,
        "R08",
    ),
    Feature(
        "spot_problems_3y",
        "近3年抽查发现问题次数",
        "Spot checks with problems, last 3 years",
        "spot_checks",
        "int",
        1,
        "R09",
    ),
)
FEATURES_BY_NAME = {f.name: f for f in FEATURES}
FEATURE_NAMES = tuple(f.name for f in FEATURES)
#: Columns a feature may never read (DOMAIN.md §3): personal information.
FORBIDDEN_SOURCES = ("operator_name", "operator_id_hmac", "address", "name")


def catalogue_dict() -> dict:
    return {
        "features": [asdict(f) for f in FEATURES],
        "reasons": [asdict(r) for r in REASONS],
        "reason_evidence": {k: [list(c) for c in v] for k, v in REASON_EVIDENCE.items()},
        "no_adverse": asdict(NO_ADVERSE),
        "categories": {k: list(v) for k, v in CATEGORIES.items()},
    }


def catalogue_version() -> str:
    """Content hash of the catalogue: any change to features or reasons changes it."""
    blob = json.dumps(catalogue_dict(), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
