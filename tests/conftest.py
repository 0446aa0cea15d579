"""Shared fixtures: small generated domains, made once per session, offline."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from records.ingest import ingest
from synth.generate import generate
from tests.helpers import SECRET, SERVICE_AS_OF

END = date(2026, 9, 30)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """A 6,000-household domain (about 2 s to make)."""
    out = tmp_path_factory.mktemp("export")
    generate(out, 6_000, seed=3, end=END, secret=SECRET, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def small_warehouse(small_export, tmp_path_factory) -> Path:
    """The small domain ingested into a DuckDB warehouse (treat as read-only)."""
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    ingest(small_export, path, progress=False)
    return path


#: The modules that take longest (bench/RESULTS.md, "The test suite on two workers"), run
#: first: ``make test`` spreads whole modules over two processes (pytest-xdist,
#: ``--dist loadfile --no-loadscope-reorder``: in collection order, not by number of
#: tests), so a long module started last would leave one worker alone at the end.
LONGEST_FIRST = (
    "test_training.py",
    "test_every_day.py",
    "test_cli_contract.py",
    "test_refresh.py",
    "test_spark_parity.py",
    "test_batch.py",
    "test_faults.py",
    "test_hostile_server.py",
    "test_notebooks.py",
    "test_service_server.py",
    "test_necessity_server.py",
    "test_watch_feed.py",
)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture parameters
def pytest_collection_modifyitems(session, config, items):
    """The longest modules first, the rest in their usual order (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
    """End the Spark session the Spark tests share (one JVM start for all of them)."""
    import sys

    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


# --- a served domain: warehouse, champion in MLflow, published snapshot ------------------

#: A test ID number (check character X) given to one household, so a match can be shown.
KNOWN_ID = "11010519491231002X"


@pytest.fixture(scope="session")
def service_home(small_warehouse, tmp_path_factory) -> Path:
    """A credref home ready to serve: champion in a sqlite MLflow store, snapshot published.

    One household (the first operating one) has its operator ID hash set to KNOWN_ID's.
    The model is a small additive booster trained on the small domain (seconds).
    """
    import shutil

    import duckdb
    import mlflow
    from mlflow.tracking import MlflowClient

    from features.catalogue import FEATURE_NAMES
    from features.dataset import as_of_dates, build_training_set
    from online_store.publish import publish
    from records.identity import id_hmac
    from training.calibration import make_scoring_model
    from training.data import load_training_set, split_out_of_time
    from training.guide import score_guide
    from training.models import fit_booster, points_table
    from training.registry import CHAMPION, log_scoring_model, use_tracking

    home = tmp_path_factory.mktemp("home")
    wh = home / "warehouse.duckdb"
    shutil.copy(small_warehouse, wh)
    con = duckdb.connect(str(wh))
    first = con.execute(
        "SELECT uscc FROM households WHERE status = 'operating' ORDER BY uscc LIMIT 1"
    ).fetchall()[0][0]
    con.execute(
        "UPDATE households SET operator_id_hmac = ? WHERE uscc = ?",
        [id_hmac(KNOWN_ID, SECRET), first],
    )
    dates = as_of_dates(date(2022, 6, 30), date(2025, 6, 30), 6)
    build_training_set(con, dates, home / "ds")
    df, _ = load_training_set(home / "ds")
    tr, va, _ = split_out_of_time(df, date(2023, 12, 31), date(2024, 6, 30))
    # Leaves of 200 rows, as written: the fixture's model does not follow the size-aware defaults.
    booster = fit_booster("additive", tr, va, {"min_data_in_leaf": 200}, seed=1, rounds=60)
    model = make_scoring_model(booster, "additive", va.X, va.y, points_table(booster, va.X))
    model.guide = score_guide(model, model.score_frame(va.X), va.y, "the validation rows")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    use_tracking(uri, home / "mlartifacts", "credref")
    with mlflow.start_run():
        version = log_scoring_model(model, tr.X.head(50), "credref-reference")
        reference = home / "reference.parquet"  # what `credref monitor` compares against
        df[df.as_of <= date(2023, 12, 31)][["as_of", *FEATURE_NAMES]].reset_index(
            drop=True
        ).to_parquet(reference)
        mlflow.log_artifact(str(reference), artifact_path="monitoring")
        test_rows = home / "test_rows.parquet"  # what notebooks and the gate read
        last = df[df.as_of == df.as_of.max()]
        last[[*FEATURE_NAMES, "label"]].reset_index(drop=True).to_parquet(test_rows)
        mlflow.log_artifact(str(test_rows), artifact_path="evaluation")
    MlflowClient().set_registered_model_alias("credref-reference", CHAMPION, version)
    publish(con, SERVICE_AS_OF, home / "online", SECRET)
    con.close()
    return home


# --- a living domain: a history export, then a daily feed ---------------------------------

FEED_DAYS = 60
LIVING_HOUSEHOLDS = 4_000


def living_export(out: Path, **kw) -> Path:
    """The living domain's generator run, with ``kw`` (known_at, history, feed_days)."""
    generate(
        out,
        LIVING_HOUSEHOLDS,
        seed=5,
        end=END,
        secret=SECRET,
        workers=1,
        progress=False,
        chunk_size=2_000,
        **kw,
    )
    return out


@pytest.fixture(scope="session")
def living_domain(tmp_path_factory) -> Path:
    """A history export as known FEED_DAYS days before END, and its daily change sets."""
    return living_export(tmp_path_factory.mktemp("living"), history=True, feed_days=FEED_DAYS)


@pytest.fixture(scope="session")
def living_warehouse(living_domain, tmp_path_factory) -> Path:
    """The living domain's base and every change set applied (treat as read-only)."""
    path = tmp_path_factory.mktemp("living_wh") / "warehouse.duckdb"
    ingest(living_domain, path, progress=False)
    for day in sorted((living_domain / "feed").iterdir()):
        ingest(day, path, progress=False)
    return path


@pytest.fixture(scope="module")
def served_env(service_home):
    """The served home's CREDREF_* settings in the environment, for a module that runs
    the service in process; the environment is restored after the module."""
    from tests.helpers import service_env

    saved = dict(os.environ)
    os.environ.update(service_env(service_home))
    yield service_home
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served_each_backend(service_home, tmp_path_factory, request):
    """A private copy of the served home, its CREDREF_* settings in the environment, with
    the shared state (keys, audit, limits, watches) in its SQLite files, then in a fresh
    PostgreSQL database: a module using it runs whole on each backend, and may publish
    or switch publications without touching another module's home. Reach the stores
    through ``tests.helpers.where`` / ``raw``."""
    from serving.state import Postgres
    from tests.helpers import copy_home, service_env

    home = copy_home(service_home, tmp_path_factory.mktemp(f"served-{request.param}") / "home")
    saved = dict(os.environ)
    os.environ.update(service_env(home))
    url = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        url = server.new_database()
        # the module's own helpers share the service's pool in this process: room for both
        Postgres.shared(url, pool_size=12)
        os.environ["CREDREF_DATABASE_URL"] = url
    try:
        yield home
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if url is not None:
            server.drop(url)


# --- PostgreSQL: the shared state of several hosts ----------------------------------------

SERVER_SCRIPT = Path(__file__).parents[1] / "deploy" / "test-postgres.sh"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session: CREDREF_TEST_DATABASE_URL if set (an admin
    URL), else a throwaway one started (and installed from Debian's packages when missing)
    by deploy/test-postgres.sh, stopped at the end. A template database at the code's
    schema makes each test's database a fast copy."""
    import shutil
    import subprocess
    import tempfile

    import psycopg

    from serving.migrations import upgrade

    url = os.environ.get("CREDREF_TEST_DATABASE_URL")
    folder = None
    if url is None:
        folder = tempfile.mkdtemp(prefix="credref-pg-")
        os.chmod(folder, 0o755)
        port = _free_port()
        started = subprocess.run(
            [str(SERVER_SCRIPT), "start", folder, str(port)], capture_output=True, text=True
        )
        if started.returncode:
            pytest.fail(f"the test PostgreSQL server did not start:\n{started.stderr}")
        url = started.stdout.strip()
    # one template per test process: pytest-xdist's workers share the server
    template = f"credref_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {template}")
        con.execute(f"CREATE DATABASE {template}")
    upgrade(_database(url, template))
    try:
        yield PostgresServer(url, folder, template)
    finally:
        if folder is not None:
            subprocess.run([str(SERVER_SCRIPT), "stop", folder], capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)


def _database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class PostgresServer:
    """The session's server: its admin URL, and its data folder if the tests started it."""

    def __init__(self, url: str, folder: str | None, template: str):
        self.url = url
        self.folder = folder
        self.template = template

    def new_database(self, upgraded: bool = True) -> str:
        """A fresh database (at the code's schema unless ``upgraded=False``); its URL."""
        import secrets

        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        template = f"TEMPLATE {self.template}" if upgraded else ""
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name} {template}")
        return _database(self.url, name)

    def drop(self, url: str) -> None:
        import psycopg

        from serving.state import Postgres

        Postgres.shared(url).close()
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture()
def pg_url(postgres_server):
    """A fresh database at the code's schema, dropped after the test."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request, tmp_path):
    """Where a test's stores live, on each backend: ``state(store)`` gives a SQLite path
    under tmp_path, or the test's PostgreSQL database (one for all stores)."""
    from serving.state import Postgres

    if request.param == "sqlite":
        return lambda store: tmp_path / f"{store}.sqlite"
    db = Postgres.shared(request.getfixturevalue("pg_url"))
    return lambda store: db
