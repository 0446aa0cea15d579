"""Helpers of ``make demo``'s monitoring part (:func:`credref.demo.demo_monitoring`): the
merchants the demo platform watches, the day's refresh, and the events it then reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from online_store.reader import OnlineStore
from records.changeset import read_changeset


def _pending_days(feed: Path, published: str) -> list[Path]:
    return [d for d in sorted(feed.iterdir()) if d.is_dir() and d.name > published]


def merchants_named_in_feed(settings, per_table: int) -> dict[str, str]:
    """Operating households that the next change set names, up to ``per_table`` from
    each of its record tables (penalties, markings, registration changes...): merchants
    whose answers the next refresh may move. The operator names come from the warehouse
    only because this demo plays the merchants too."""
    chosen: set[str] = set()
    with OnlineStore(settings.online_path).current() as snap:
        for day in _pending_days(settings.feed_dir, snap.as_of)[:1]:
            for table, path in sorted(read_changeset(day).rows.items()):
                if table == "households" or "uscc" not in pq.read_schema(path).names:
                    continue
                codes = sorted(set(pq.read_table(path, columns=["uscc"]).column(0).to_pylist()))
                frame = snap.frame(codes)
                chosen |= set(sorted(frame[frame.status == "operating"].uscc)[:per_table])
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT uscc, any_value(operator_name) FROM households "
            "WHERE list_contains(?, uscc) GROUP BY uscc",
            [sorted(chosen)],
        ).fetchall()
    finally:
        con.close()
    return dict(sorted(rows))


def run_refresh(console: Console) -> None:
    """``credref refresh`` as the daily timer runs it (the service keeps answering)."""
    console.print("running the day's refresh: credref refresh")
    done = subprocess.run(
        [sys.executable, "-m", "credref.cli", "refresh"], capture_output=True, text=True
    )
    console.print(done.stdout.rstrip())
    if done.returncode != 0:
        raise SystemExit(f"the refresh failed: {done.stderr[-2000:]}")


def print_events(console: Console, events: list[dict]) -> None:
    table = Table(title="GET /v1/changes: what changed for the watched merchants")
    for col in ("id", "uscc", "event", "from", "to", "cause", "publication"):
        table.add_column(col)
    table.add_column("reason and what the household can do", overflow="fold")
    for e in events:
        reasons = e.get("reasons") or ([e["reason"]] if e.get("reason") else [])
        told = "; ".join(
            f"{r['code']} {r['text_en']}: {r['guidance']['text_en']}" for r in reasons[:1]
        )
        table.add_row(
            e["id"],
            e["uscc"],
            e["kind"],
            e.get("from", ""),
            e.get("to", ""),
            e.get("cause", ""),
            e["publication"],
            told,
        )
    console.print(table)
    if not events:
        console.print("no events: nothing the platform watches changed in this refresh")
