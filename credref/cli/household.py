"""``credref household ...``: what the regulator's counter or hotline hands a household
about itself (registered on the main app by :mod:`credref.cli.app`)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from stdnum.cn import uscc as s_uscc

from credref.cli.common import ObservedDay, console, fail, parse_date, served_model, warehouse_ro
from features.catalogue import NO_ADVERSE, REASONS_BY_CODE
from settings import load_settings

household_app = typer.Typer(help="The household's own side: its report.", no_args_is_help=True)


def _queries(uscc: str) -> list[dict]:
    """The household's query record (``credref audit subject``); none before any request."""
    # the stores' modules, only when a report is asked for (the CLI starts light)
    from serving.audit import AuditLog, AuditUnavailable
    from serving.state import located

    place = located(load_settings(), "audit")
    if isinstance(place, Path) and not place.is_file():
        return []  # no service has answered yet: nobody asked
    try:
        return AuditLog(place).about(uscc)
    except AuditUnavailable as e:
        fail(str(e))
        raise  # unreachable: fail exits


@household_app.command("report")
def report(
    uscc: Annotated[str, typer.Argument(help="The household's unified social credit code.")],
    as_of: ObservedDay = None,
    lang: Annotated[str, typer.Option(help="Language of the report: zh or en.")] = "zh",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the HTML and PDF (default: <home>/reports).")
    ] = None,
) -> None:
    """Write a household's own report (HTML and PDF): its class, score and reasons, the
    records behind them with the day each stops counting and can end early, its class
    on those days if nothing else changes, who asked about it, and how to object."""
    # DuckDB's SQL, the model and WeasyPrint: loaded only when this command runs
    from features.dataset import observed_through
    from household.render import LANGS, to_html, to_pdf
    from household.report import build_report

    if lang not in LANGS:
        fail(f"--lang must be one of {', '.join(LANGS)}")
    if not s_uscc.is_valid(uscc):
        fail("not a valid unified social credit code")
    code = s_uscc.compact(uscc)
    settings = load_settings()
    champion = served_model()
    con = warehouse_ro()
    try:
        day = parse_date(as_of) if as_of else observed_through(con)
        objections = [o.__dict__ for o in _objections().listing(code)]
        r = build_report(
            con,
            code,
            day,
            champion.model,
            champion.version,
            _queries(code),
            settings.review_url,
            objections,
        )
    finally:
        con.close()
    folder = out or settings.home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    html = to_html(r, lang)
    stem = folder / f"{code}-{day.isoformat()}-{lang}"
    stem.with_suffix(".html").write_text(html, encoding="utf-8")
    to_pdf(html, stem.with_suffix(".pdf"))
    console.print(summary(r))
    console.print(f"wrote {stem}.html and {stem}.pdf")


def summary(r) -> str:
    """A few lines for the counter's screen (and `make demo`)."""
    if r.score is None:
        return f"{r.uscc} on {r.as_of}: {r.status}, not scored"
    texts = [f"{c} {REASONS_BY_CODE.get(c, NO_ADVERSE).text_en}" for c in r.reasons]
    lines = [f"{r.uscc} on {r.as_of}: class {r.risk_class}, score {r.score} ({'; '.join(texts)})"]
    for t in r.outlook[:4]:
        lines.append(
            f"  {t.day}: class {t.risk_class}, score {t.score} ({t.because}: "
            f"{', '.join(sorted({e.reason for e in t.evidence}))})"
        )
    lines.append(f"  asked about {len(r.queries)} times")
    return "\n".join(lines)


# --- objections (异议): registered at the counter, resolved by a second person ----------

objection_app = typer.Typer(
    help="A household's objections to its records (four eyes on resolution).",
    no_args_is_help=True,
)


def _objections():
    """The objection store where the settings put the watches (SQLite or PostgreSQL)."""
    # the stores' modules, only when an objection command runs
    from serving.objections import ObjectionStore
    from serving.state import located

    return ObjectionStore(located(load_settings(), "watch"))


def _told():
    """The day, and the publication and champion the watching platforms' answers come from."""
    # the publication reader and the champion (BentoML): only for these commands
    from online_store.reader import OnlineStore
    from serving.objections import Told

    settings = load_settings()
    try:
        with OnlineStore(settings.online_path).current() as snap:
            publication = snap.as_of
    except FileNotFoundError as e:
        fail(f"no publication to answer from: {e}")
    return Told(settings.domain_today(), publication, served_model().version)


def _record(value: str) -> tuple[str, str]:
    """``KIND:REFERENCE`` (a penalty's decision number, a report year) or ``KIND:DATE``."""
    kind, sep, ref = value.partition(":")
    if not sep or not kind or not ref:
        fail("--record is KIND:REFERENCE or KIND:YYYY-MM-DD, as the household's report lists it")
    return kind, ref


@objection_app.command("open")
def objection_open(
    uscc: Annotated[str, typer.Argument(help="The household's unified social credit code.")],
    record: Annotated[
        str,
        typer.Option(help="The disputed record: KIND:REFERENCE or KIND:DATE (its report's)."),
    ],
    by: Annotated[str, typer.Option(help="Who registers the objection (regulator staff).")],
    statement: Annotated[
        str, typer.Option(help="The household's own statement (本人声明); kept in the domain.")
    ] = "",
) -> None:
    """Register a household's objection to one of its records: while it is open, every
    answer marks the reasons the record stands behind ``under_objection``, and the
    platforms watching the household are told."""
    from household.evidence import evidence  # DuckDB's SQL: only when this command runs
    from serving.objections import ObjectionRefused

    if not s_uscc.is_valid(uscc):
        fail("not a valid unified social credit code")
    code, (kind, ref) = s_uscc.compact(uscc), _record(record)
    settings = load_settings()
    con = warehouse_ro()
    try:
        found = evidence(con, code, settings.domain_today())
    finally:
        con.close()
    behind = [e for e in found if e.kind == kind and ref in (e.reference, e.dated.isoformat())]
    if not behind:
        fail("no such record counts for this household today (see its report's records)")
    e = behind[0]
    reasons = sorted({b.reason for b in behind})
    told = _told()
    try:
        o = _objections().open(
            code, (e.kind, e.reference, e.dated.isoformat()), reasons, statement, by, told
        )
    except ObjectionRefused as err:
        fail(str(err))
    _audit("credref objection open", code, {"objection": o.id, "reasons": list(o.reasons)})
    console.print(f"objection {o.id} open: {', '.join(o.reasons)} marked under objection")


@objection_app.command("resolve")
def objection_resolve(
    objection_id: Annotated[str, typer.Argument(help="The objection's id (obj_...).")],
    outcome: Annotated[str, typer.Option(help="upheld or rejected.")],
    by: Annotated[str, typer.Option(help="Who resolves it: not the person who registered it.")],
) -> None:
    """Resolve an open objection. Upheld: correct the record through a change set
    (``credref ingest``, then ``credref refresh``); rejected: the record stands. Either
    way the marker goes and the watching platforms are told."""
    from serving.objections import ObjectionRefused  # the stores: only when this runs

    told = _told()
    try:
        o = _objections().resolve(objection_id, outcome, by, told)
    except ObjectionRefused as err:
        fail(str(err))
    _audit("credref objection resolve", o.subject, {"objection": o.id, "outcome": outcome})
    console.print(f"objection {o.id} {outcome}")


@objection_app.command("list")
def objection_list(
    uscc: Annotated[str | None, typer.Argument(help="Only this household's.")] = None,
    only_open: Annotated[bool, typer.Option("--open", help="Only those still open.")] = False,
) -> None:
    """Objections, oldest first (the statement is not shown here: the report shows it)."""
    from rich.table import Table  # the table: only when this runs

    if uscc is not None and not s_uscc.is_valid(uscc):
        fail("not a valid unified social credit code")
    code = s_uscc.compact(uscc) if uscc else None
    rows = _objections().listing(code, only_open)
    table = Table(title=f"{len(rows)} objections")
    for col in ("id", "uscc", "record", "reasons", "opened", "by", "resolved", "by", "outcome"):
        table.add_column(col)
    for o in rows:
        table.add_row(
            o.id,
            o.subject,
            f"{o.record_kind}:{o.record_ref or o.record_dated}",
            " ".join(o.reasons),
            o.opened_at[:19],
            o.opened_by,
            (o.resolved_at or "")[:19],
            o.resolved_by or "",
            o.outcome or "open",
        )
    console.print(table)


def _audit(endpoint: str, uscc: str, outcome: dict) -> None:
    """The regulator's action in the audit chain, beside the platforms' requests."""
    # the audit store: only when an objection is opened or resolved
    from serving.audit import AuditLog, AuditRecord
    from serving.state import located

    log = AuditLog(located(load_settings(), "audit"))
    log.append(
        AuditRecord(secrets.token_hex(16), endpoint, outcome, purpose="objection", subject=uscc)
    )
