"""``credref validate``: the validation report of a registered model version (registered
on the main app by :mod:`credref.cli.app`; the work is :mod:`governance.validation`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table as RichTable

from credref.cli.common import ObservedDay, console, fail, parse_date, warehouse_ro
from features.dataset import observed_through
from settings import load_settings


def validate(
    version: Annotated[
        str | None, typer.Option(help="Model version (default: the champion).")
    ] = None,
    as_of: ObservedDay = None,
) -> None:
    """Discriminatory power now against development (AUC, intervals, the test of its
    change), calibration per class (Jeffreys), concentration (Herfindahl), migration,
    population stability, slices; HTML + JSON logged to the version's MLflow run."""
    import mlflow  # heavy: loaded only when this command runs

    from governance.validation import (  # heavy: loaded only when this command runs
        render_html,
        run_validation,
        to_json,
    )

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    con = warehouse_ro()
    try:
        day = parse_date(as_of) if as_of else observed_through(con)
        v, r = run_validation(con, settings.registered_model, version, day)
    except (ValueError, LookupError) as e:
        fail(str(e))
    finally:
        con.close()
    dp = r["discriminatory_power"]
    table = RichTable(title=f"validation of version {v} as of {day}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, a in (("AUC at development", dp["development"]), ("AUC now", dp["now"])):
        table.add_row(label, f"{a['auc']:.4f} ({a['ci'][0]:.4f}–{a['ci'][1]:.4f})")
    table.add_row("AUC change test p", f"{dp['change_test']['p_value']:.4f}")
    for row in r["calibration_by_class"]:
        table.add_row(f"class {row['class']} Jeffreys p", f"{row['jeffreys_p']:.4f}")
    table.add_row("Herfindahl (normalised)", f"{r['concentration']['normalised']:.4f}")
    table.add_row("stayed in class over a year", f"{r['migration']['stayed']:.2%}")
    table.add_row("score PSI against development", f"{r['population_stability']['score_psi']:.4f}")
    console.print(table)
    console.print(f"verdict: {r['verdict']}" + "".join(f"\n  - {f}" for f in r["findings"]))
    folder = settings.home / "validation" / day.isoformat()  # beside the command's output too
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "validation.json").write_text(to_json(r))
    (folder / "validation.html").write_text(render_html(r))
    console.print(f"report: {folder / 'validation.html'}; in MLflow: validation/{day}/")
