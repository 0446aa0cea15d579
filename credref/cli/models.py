"""``credref train|promote|impact|rollback|model-files|monitor``: the analyst's and the
approver's commands over MLflow's registry."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from credref.cli.common import ObservedDay, console, fail, parse_date, served_model, warehouse_ro
from credref.cli.refresh import derive_and_print_events
from features.dataset import observed_through
from scoring.spec import load_spec
from settings import load_settings


def train(
    config: Annotated[Path, typer.Option(help="TOML training config (see configs/demo.toml).")],
    trials: Annotated[
        int | None,
        typer.Option(
            help="Optuna trials over the LightGBM parameters on the validation window "
            "before fitting (default: the config's [model] trials, else none)."
        ),
    ] = None,
    spec: Annotated[
        str | None,
        typer.Option(
            help="The catalogue to train on, MODULE:NAME or FILE.py:NAME (a ModelSpec; "
            "default: the config's [model] spec, else credref's)."
        ),
    ] = None,
) -> None:
    """Train, check, evaluate and register a model (not yet champion: see promote)."""

    from training.config import TrainConfig  # light: the config is checked before the wait

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        cfg = TrainConfig.from_toml(config)  # a wrong path or key is said before the wait
        from training.train import train as run  # heavy: loaded only when this command runs

        if trials is not None:
            cfg = replace(cfg, trials=trials)
        if spec is not None:
            cfg = replace(cfg, spec=load_spec(spec))
        if cfg.trials > 0:  # a search takes long: each trial says how it went (stderr, timed)
            logging.getLogger("training.tuning").setLevel(logging.INFO)
        result = run(
            cfg,
            settings.tracking_uri,
            settings.artifact_root,
            settings.registered_model,
            settings.analyst,
        )
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    s = result.summary
    table = RichTable(
        title=f"trained version {result.version} ({result.chosen}) — run {result.run_id[:8]}"
    )
    table.add_column("metric")
    table.add_column("out-of-time test", justify="right")
    for k, v in result.test_metrics.items():
        table.add_row(k, f"{v:.4f}")
    for k, v in s["test_auc"].items():
        table.add_row(f"auc {k}", f"{v:.4f}")
    if s.get("oracle_auc"):
        table.add_row("oracle auc", f"{s['oracle_auc']:.4f}")
        table.add_row("oracle ratio", f"{s['oracle_ratio']:.4f}")
    if s.get("all_published"):
        table.add_row(
            "auc, all published records", f"{s['all_published']['test_auc_all_published']:.4f}"
        )
    table.add_row("class rates rise A→D", str(s["class_rates_increasing"]))
    for key, label, spec in (
        ("worst_month_auc", "worst month: auc", ".4f"),
        ("worst_month_ece", "worst month: ece", ".4f"),
        ("worst_month_oracle_ratio", "worst month: oracle ratio", ".4f"),
        ("worst_month_class_moves_without_event", "worst month: class moves, no event", ".2%"),
    ):
        if s.get(key) is not None:
            table.add_row(label, format(s[key], spec))
    table.add_row("checks passed", str(result.checks_passed))
    console.print(table)
    for line in s.get("tuning", []):
        console.print(line)
    console.print(f"selection: {s['why']}")
    if not result.checks_passed:
        console.print("[red]checks failed:[/red] " + "; ".join(s["check_failures"]))
        raise typer.Exit(code=1)


def promote(
    approver: Annotated[
        str, typer.Option(help="Who approves (four eyes: not who trained the version).")
    ],
    version: Annotated[str | None, typer.Option(help="Model version (default: newest).")] = None,
    accept_impact: Annotated[
        str | None,
        typer.Option(help="Promote although more households than allowed change class: why."),
    ] = None,
) -> None:
    """Make a version the champion if it passes the gate (four eyes, checks, ECE, AUC vs
    champion, impact on the published households); the approval is recorded on it."""
    import mlflow  # heavy: loaded only when this command runs

    from training.registry import promote as run  # heavy: loaded only when this command runs

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        found = _impact(settings, version)
        result = run(
            settings.registered_model,
            version,
            approver=approver,
            impact_share=found[2].changed_share if found else None,
            max_class_change=settings.max_class_change,
            accept_impact=accept_impact,
        )
    except ValueError as e:
        fail(str(e))
    if result.promoted:
        console.print(
            f"version {result.version} is now the champion (test AUC {result.challenger_auc:.4f})"
        )
        if (settings.online_path / "current").exists():  # households whose class it moves
            derive_and_print_events(settings)
        return
    console.print(f"[red]refused[/red] version {result.version}:")
    for r in result.reasons:
        console.print(f"  - {r}")
    raise typer.Exit(code=1)


def _impact(settings, version: str | None):
    """The challenger's impact on the current publication, or None (no publication or no
    other champion)."""
    from governance.impact import (  # heavy: loaded only when this command runs
        render_html,
        run_impact,
    )
    from serving.state import located  # with the impact's modules

    if not (settings.online_path / "current").exists():
        return None
    found = run_impact(
        settings.registered_model, version, settings.online_path, located(settings, "watch")
    )
    if found is not None:
        current, challenger, im = found
        folder = settings.home / "impact" / f"v{challenger}-against-v{current}"
        folder.mkdir(parents=True, exist_ok=True)  # beside the command's output, as in MLflow
        (folder / "impact.json").write_text(im.to_json())
        title = f"Impact of version {challenger} against champion {current}"
        (folder / "impact.html").write_text(render_html(im, title))
        console.print(
            f"impact of version {challenger} against champion {current}: "
            f"{im.changed_share:.2%} of {im.households:,} published households change class "
            f"(report: {folder / 'impact.html'}; in MLflow: impact/impact.html)"
        )
        for platform, w in im.watched_by_platform.items():
            console.print(
                f"  {platform}: {w['changed']:,} of its {w['watched']:,} watched households"
            )
    return found


def impact(
    version: Annotated[str | None, typer.Option(help="Model version (default: newest).")] = None,
) -> None:
    """Score the latest publication's households with the version and the champion:
    class migration, share changing class by city, score shift, reasons (HTML + JSON in
    MLflow)."""
    import mlflow  # heavy: loaded only when this command runs

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        found = _impact(settings, version)
    except ValueError as e:
        fail(str(e))
    if found is None:
        fail("nothing to compare: no publication, or no champion other than this version")
    im = found[2]
    table = RichTable(title="class migration (rows: champion, columns: challenger)")
    table.add_column("")
    for c in "ABCD":
        table.add_column(c, justify="right")
    for r in "ABCD":
        table.add_row(r, *(f"{im.migration[r][c]:,}" for c in "ABCD"))
    console.print(table)
    s = im.score_shift
    console.print(
        f"score shift: mean {s['mean']:+.1f}, median {s['p50']:+.0f}, 5%-95% "
        f"{s['p05']:+.0f}..{s['p95']:+.0f}; first reason changes for "
        f"{im.first_reason_changed_share:.2%}"
    )


def relocate() -> None:
    """After moving or copying a home: point its MLflow store at this home's artefact
    folder (the store keeps absolute locations; until then training refuses to start)."""
    from training.registry import relocate_store  # heavy: loaded only when this command runs

    settings = load_settings()
    done = relocate_store(settings.tracking_uri, settings.artifact_root)
    if not done:
        console.print(f"nothing to do: the store already points at {settings.artifact_root}")
        return
    rows = ", ".join(f"{n} in {where}" for where, n in sorted(done.items()))
    console.print(f"the MLflow store now points at {settings.artifact_root} ({rows})")


def rollback() -> None:
    """Restore the previous champion."""
    import mlflow  # heavy: loaded only when this command runs

    from training.registry import rollback as run  # heavy: loaded only when this command runs

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        version = run(settings.registered_model)
    except ValueError as e:
        fail(str(e))
    console.print(f"version {version} is the champion again")


def model_files(
    out: Annotated[Path, typer.Option(help="Folder for the champion's files.")],
) -> None:
    """Write the champion's scoring files (booster, calibration, points) for spark-submit."""
    served = served_model()
    served.model.save(out)
    meta = out / "scoring.json"

    meta.write_text(
        json.dumps({**json.loads(meta.read_text()), "mlflow_version": served.version}, indent=2)
    )
    console.print(f"{served.tag} -> {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")


def monitor(
    as_of: ObservedDay = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: <home>/monitoring/<as-of>).")
    ] = None,
) -> None:
    """Drift (PSI/CSI), class migration, back-test and slices of the champion: HTML + JSON."""
    import mlflow  # heavy: loaded only when this command runs

    from governance.monitor import (  # heavy: loaded only when this command runs
        champion_reference,
        gather,
        log_to_mlflow,
    )
    from governance.monitor_metrics import build_report  # heavy: loaded only when this command runs
    from governance.monitor_render import write_report  # heavy: loaded only when this command runs

    settings = load_settings()
    served = served_model()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        version, run_id, reference = champion_reference(settings.registered_model)
    except ValueError as e:
        fail(str(e))
    con = warehouse_ro()
    try:
        day = parse_date(as_of) if as_of else observed_through(con)
        inputs = gather(con, day, reference)
    finally:
        con.close()
    report = build_report(served.model, inputs, version)
    folder = out or settings.home / "monitoring" / day.isoformat()
    files = write_report(report, folder)
    run = log_to_mlflow(report, files, run_id)
    s = report["summary"]
    table = RichTable(title=f"monitoring as of {day} (model v{version})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    table.add_row("score PSI", f"{s['score_psi']:.4f}", s["score_verdict"])
    for name, v in sorted(report["feature_csi"].items(), key=lambda kv: -kv[1]["psi"])[:5]:
        table.add_row(f"CSI {name}", f"{v['psi']:.4f}", v["verdict"])
    table.add_row(
        "back-test classes inconsistent (5%)", str(s["backtest_inconsistent_classes"]), ""
    )
    console.print(table)
    console.print(f"verdict: {s['verdict']}" + "".join(f"\n  - {f}" for f in s["findings"]))
    console.print(f"report: {files[1]} (figures: {files[0]}); MLflow run {run[:8]}")
