"""Helpers shared by test modules: a real server on a served home, and its settings."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from records.schema import TABLES
from records.warehouse import table_ddl
from serving import launch

#: The ID-hash secret of every test domain.
SECRET = b"test-secret"
#: The served test domain's publication date, and its clock (CREDREF_TODAY).
SERVICE_AS_OF = date(2026, 6, 30)


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """CREDREF_* settings for a service on ``home`` (secret, paths, short audit wait)."""
    return {
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_ID_HASH_SECRET": SECRET.decode(),
        "CREDREF_AUDIT_TIMEOUT_S": "0.5",
        "CREDREF_TODAY": SERVICE_AS_OF.isoformat(),
        "BENTOML_HOME": str(home / "bentoml"),
        **extra,
    }


def relate(home: Path, platform: str, codes: list[str] | None = None) -> None:
    """Make ``codes`` (default: every household of the current publication) the platform's
    merchants, as a verification with an operator match would (serving.relation): for the
    tests whose subject is not the relation rule itself (test_necessity_server's is)."""
    import sqlite3

    from serving.limits import VerifyLimits

    if codes is None:
        snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
        codes = [r[0] for r in snap.execute("SELECT uscc FROM subjects")]
        snap.close()
    limits = VerifyLimits(home / "limits.sqlite")
    limits.remember_matches(platform, codes)
    limits.close()


#: A home's SQLite databases: the stores and publications (``*.sqlite``), MLflow's store.
#: (Other ``*.db`` files are not SQLite: Prometheus's multiprocess files, for one.)


def _is_database(name: str) -> bool:
    return name.endswith(".sqlite") or name == "mlflow.db"


def copy_home(src: Path, dst: Path) -> Path:
    """Copy a home whose SQLite files this process may have open, through SQLite itself.

    A plain file copy opens and closes each database file, and closing any descriptor of a
    file drops every POSIX lock the process holds on it: a store connection still open
    here (an in-process service of an earlier module) would go on without its locks while
    a server process writes the same file, and the file ends "malformed". SQLite's backup
    reads the database, its write-ahead log included, through the connection's own file
    handling, which keeps the locks."""
    import shutil
    import sqlite3
    from contextlib import closing

    def databases(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if _is_database(n.removesuffix("-wal").removesuffix("-shm"))]

    shutil.copytree(src, dst, symlinks=True, ignore=databases)
    for path in src.rglob("*"):
        if _is_database(path.name) and path.is_file() and not path.is_symlink():
            target = dst / path.relative_to(src)
            with closing(sqlite3.connect(path)) as a, closing(sqlite3.connect(target)) as b:
                a.backup(b)
    return dst


def where(store: str):
    """Where the settings in force keep ``store``: its SQLite file, or the database."""
    from serving.state import located
    from settings import load_settings

    return located(load_settings(), store)


def raw(store: str):
    """A plain connection to ``store`` as the settings place it (an insider's view)."""
    from serving.state import place

    return place(where(store), store).connect()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    launch.wait_ready(f"{url}/readyz", proc, log, timeout)


def start_server(home: Path, log: Path, workers: int = 2, **extra: str):
    """A real ``credref serve`` on ``home``; returns the process and its base URL."""
    port = launch.free_port()
    proc = launch.start(service_env(home, CREDREF_PORT=str(port), **extra), log, workers)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    launch.stop(proc, timeout=30)


# --- point-in-time logic on a handful of in-memory rows ---------------------------------


def assert_frames_equal(sql: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(sql.columns) == list(ref.columns)
    assert len(sql) == len(ref)
    for c in sql.columns:
        a, b = sql[c], ref[c]
        if c == "as_of":
            a, b = a.astype(str), b.astype(str)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            same = np.isclose(a.astype(float), b.astype(float), rtol=0, atol=0, equal_nan=True)
        else:
            same = a.to_numpy() == b.to_numpy()
        assert same.all(), (
            f"{c}: {int((~same).sum())} rows differ, e.g. {sql.loc[~same, 'uscc'].head(3).tolist()}"
        )


T = date(2024, 6, 30)
H = "92440304MA5DKQ0E7Q"  # any string key works here; the warehouse does not re-validate


def micro(records: dict[str, list[dict]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for t in TABLES:
        con.execute(table_ddl(t))
        rows = records.get(t.name, [])
        if rows:
            df = pd.DataFrame([{c: r.get(c) for c in t.column_names} for r in rows])
            con.register("_in", df)
            cols = ", ".join(f'"{c}"' for c in t.column_names)
            con.execute(f'INSERT INTO "{t.name}" ({cols}) SELECT * FROM _in')
            con.unregister("_in")
    return con


def household(**kw) -> dict:
    base = dict(
        uscc=H,
        name=None,
        operator_name="x",
        operator_id_hmac="0" * 64,
        org_form="individual",
        industry="H",
        division_code="440304",
        address="x",
        registered_on=date(2018, 3, 1),
        status="operating",
        status_changed_on=None,
        status_reason=None,
    )
    return {**base, **kw}


def penalty_row(**kw) -> dict:
    """An ordinary, published fine in publicity; override what a test is about."""
    base = dict(
        uscc=H,
        decision_no="p",
        decided_on=date(2023, 1, 1),
        procedure="ordinary",
        published_on=date(2023, 1, 10),
        violation_type="pricing",
        penalty_kinds="fine",
        fine_yuan=8000.0,
        publicity_end=date(2026, 1, 9),
        repaired_on=None,
        withdrawn_on=None,
    )
    return {**base, **kw}


def store_rows(online: Path) -> list[tuple]:
    """Every row of the online store's current publication, hashes included, in code order."""
    import os
    import sqlite3

    from online_store.reader import CURRENT

    con = sqlite3.connect(online / os.readlink(online / CURRENT))
    try:
        return con.execute("SELECT * FROM subjects ORDER BY uscc").fetchall()
    finally:
        con.close()
