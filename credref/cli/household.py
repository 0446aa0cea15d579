"""``credref household ...``: what the regulator's counter or hotline hands a household
about itself (registered on the main app by :mod:`credref.cli.app`)."""

from __future__ import annotations

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
        r = build_report(
            con, code, day, champion.model, champion.version, _queries(code), settings.review_url
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
