"""The end of ``make demo``: start the service, ask it as a platform would, stop it.

Starts ``credref serve`` (a real BentoML server), creates a demo platform key, picks
three households from the published snapshot -- one with a clean record, one marked
abnormal, one with usable penalties -- and, over HTTP, verifies each (claiming the
registered operator name, so the answer is ``match``; the claim is read from the
warehouse here only because this demo plays the merchant) and scores each. The answers
are printed as a table. Then merchant monitoring: the platform verifies and watches
merchants the next change set names, the day's ``credref refresh`` runs while the service
answers, and the platform reads its change feed. Then the service is stopped, and the
household with penalties gets its own report (`credref household report`).

    python -m credref.demo
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from client import CredrefClient, CredrefError
from credref.demo_feed import merchants_named_in_feed, print_events, run_refresh
from online_store.reader import OnlineStore
from serving import launch
from serving.keys import KeyStore
from serving.state import located
from settings import load_settings

console = Console() if sys.stdout.isatty() else Console(width=160)

#: pandas queries over the publication's features (calendar-derived ones for its day).
PICKS = {
    "clean record": "reg_age_years >= 3 and abnormal_now_report == 0 "
    "and abnormal_now_unreachable == 0 and penalties_3y == 0 and serious_listed == 0 "
    "and spot_problems_3y == 0 and last_report_missing == 0",
    "marked abnormal": "(abnormal_now_report == 1 or abnormal_now_unreachable == 1) "
    "and serious_listed == 0",
    "with penalties": "penalties_3y > 0 and abnormal_now_report == 0 and serious_listed == 0",
}


def pick_households(online: Path) -> dict[str, str]:
    with OnlineStore(online).current() as snap:
        frame = snap.frame()
    operating = frame[frame.status == "operating"].sort_values("uscc")
    out = {}
    for label, query in PICKS.items():
        found = operating.query(query)
        if found.empty:
            raise SystemExit(f"no household '{label}' in the published snapshot")
        out[label] = str(found.uscc.iloc[0])
    return out


def main() -> None:
    settings = load_settings()
    picks = pick_households(settings.online_path)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    claims = dict(
        con.execute(
            "SELECT uscc, operator_name FROM households WHERE list_contains(?, uscc)",
            [list(picks.values())],
        ).fetchall()
    )
    con.close()
    _, key = KeyStore(located(settings, "keys")).create(
        "demo-platform", ["verify", "score", "watch"]
    )
    port = launch.free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = settings.home / "service.log"
    console.print(f"starting the service on {url} (log: {log_path}) ...")
    proc = launch.start({"CREDREF_PORT": str(port)}, log_path, workers=1)
    try:
        try:
            launch.wait_ready(f"{url}/readyz", proc, log_path)
        except launch.NotReady as e:
            raise SystemExit(f"the service did not start: {e}") from None
        table = Table(title="credref answers a platform (key scopes: verify, score)")
        for col in ("household", "uscc", "verify: status", "operator name", "score", "class"):
            table.add_column(col)
        table.add_column("reasons", overflow="fold")
        with CredrefClient(url, key) as api:  # the platform's client (client/)
            for label, uscc in picks.items():
                vb = api.verify(uscc, operator_name=claims[uscc])
                sb = api.score(uscc)
                reasons = "; ".join(f"{r['code']} {r['text_en']}" for r in sb["reasons"])
                table.add_row(
                    label,
                    uscc,
                    vb["status"],
                    vb["fields"]["operator_name"],
                    str(sb["score"]),
                    sb["risk_class"],
                    reasons,
                )
            try:
                api.score_batch([uscc], "onboarding")
                refused = "answered (unexpected)"
            except CredrefError as e:
                refused = f"HTTP {e.status} {e.code}"
            guide = api.score_guide()
        console.print(table)
        console.print(
            f"as of {sb['as_of']}, model version {sb['model_version']}; a batch call with this "
            f"key is refused: {refused}"
        )
        print_guide(guide)
        if settings.feed_dir and settings.feed_dir.is_dir():
            with CredrefClient(url, key) as api:
                demo_monitoring(api, settings)
    finally:
        launch.stop(proc)
    console.print("service stopped; every call above is in the audit log (`credref audit verify`)")
    print_household_report(picks["with penalties"])


def print_household_report(uscc: str) -> None:
    """What the regulator's counter hands the household with penalties: its own report."""
    from credref.cli.household import report  # the command itself, in this process

    console.print(f"\nthe household's own report (credref household report {uscc} --lang en):")
    report(uscc, as_of=None, lang="en", out=None)


def print_guide(guide: dict) -> None:
    """GET /v1/score_guide as a table: what each class means for this model version."""
    table = Table(title="GET /v1/score_guide: what a class means (fixed bands, every day)")
    for col in ("class", "long-run PD", "score", "observed bad rate (95% interval)"):
        table.add_column(col)
    for k in guide["classes"]:
        rate, ci = k.get("observed_rate"), k.get("interval_95")
        seen = f"{rate:.1%} ({ci[0]:.1%}-{ci[1]:.1%})" if rate is not None else "-"
        band = f"{k['long_run_pd_from']:.1%}-{k['long_run_pd_to']:.1%}"
        table.add_row(k["class"], band, f"{k['score_from']}-{k['score_to']}", seen)
    console.print(table)


def demo_monitoring(api: CredrefClient, settings) -> None:
    """The platform watches merchants it verified, the day's refresh runs, and the
    platform reads what changed from its change feed."""

    merchants = merchants_named_in_feed(settings, per_table=4)
    for uscc, operator_name in merchants.items():
        api.verify(uscc, operator_name=operator_name)
    watched = sum(r["watched"] for r in api.watch(list(merchants))["results"])
    listed = api.watched()["count"]
    console.print(f"the platform watches {watched} merchants it verified (GET /v1/watch: {listed})")
    run_refresh(console)
    print_events(console, list(api.all_changes()))


if __name__ == "__main__":
    main()
