"""Typed settings, read from ``CREDREF_*`` environment variables.

Nothing is read at import time: call :func:`load_settings` where settings are needed
(the CLI), and pass plain values into library functions.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

#: China Standard Time: the regulator's calendar day.
CST = timezone(timedelta(hours=8))

#: The development secret. It is public (it is in this file), so a warehouse built with
#: it must never hold real ID numbers. Production sets CREDREF_ID_HASH_SECRET.
DEV_ID_HASH_SECRET = "credref-development-secret-not-for-production"

#: The MLflow alias of the model the service answers with: set by ``credref promote``
#: (training), read when the service starts (scoring.served).
CHAMPION_ALIAS = "champion"


def _under_home(field: str, default: str) -> Any:
    """A path setting's value, or ``<home>/<default>`` when it is not set."""

    def get(self: Settings) -> Path:
        return getattr(self, field) or self.home / default

    return property(get, doc=f"``{field}``, default ``<home>/{default}``.")


class Settings(BaseSettings):
    """All configurable paths and secrets of credref.

    Every field maps to an environment variable ``CREDREF_<FIELD>``.
    """

    # "off" reads as None: how an optional limit is switched off from the environment.
    model_config = SettingsConfigDict(
        env_prefix="CREDREF_", extra="ignore", env_parse_none_str="off"
    )

    home: Path = Field(Path("var"), description="Root folder for local state.")
    warehouse: Path | None = Field(
        None, description="DuckDB warehouse file (default: <home>/warehouse.duckdb)."
    )
    id_hash_secret: SecretStr = Field(
        SecretStr(DEV_ID_HASH_SECRET),
        description="In-domain HMAC key for operator ID numbers.",
    )
    seed: int = Field(7, description="Default seed of the synthetic generator.")
    duckdb_memory_limit: str = Field(
        "8GB", description="DuckDB memory cap; it spills to disk beyond."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking store (default: sqlite:///<home>/mlflow.db)."
    )
    mlflow_artifacts: Path | None = Field(
        None, description="MLflow artefact root (default: <home>/mlartifacts)."
    )
    registered_model: str = Field(
        "credref-reference", description="Registered model name in MLflow."
    )
    max_class_change: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Promotion gate: the largest share of published households a new "
        "champion may move between classes without --accept-impact.",
    )
    analyst: str | None = Field(
        None,
        description="Who trains (recorded on each model version for the four-eyes rule; "
        "default: the OS user).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL holding the state every serving host shares (keys, audit "
        "chain, limits and budgets, watches, the change feed), as postgresql://...; unset: "
        "one SQLite file per store under <home> (one host). `credref db upgrade` makes its "
        "schema.",
    )
    keys_db: Path | None = Field(
        None, description="Platform API-key store (default: <home>/keys.sqlite)."
    )
    audit_db: Path | None = Field(None, description="Audit log (default: <home>/audit.sqlite).")
    audit_timeout_s: float = Field(
        5.0, gt=0, description="How long a request waits for the audit store before a 503."
    )
    limits_db: Path | None = Field(
        None, description="Verification guessing-limit state (default: <home>/limits.sqlite)."
    )
    watch_db: Path | None = Field(
        None, description="Watch lists and change-feed events (default: <home>/watch.sqlite)."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=60, description="Time a request body may take to arrive before a 408."
    )
    review_url: str = Field(
        "https://review.credref.example/",
        description="Where a household asks for its report and a human review of a score "
        "(the regulator's page or counter): every score answer carries it with the "
        "request's reference, never a household's data. Set it for real use.",
    )
    answer_timeout_s: float = Field(
        10.0, gt=0, le=60, description="Time an endpoint may take to answer before a 503."
    )
    audit_anchor_key: Path | None = Field(
        None,
        description="Ed25519 key signing audit checkpoints; keep it apart from the audit "
        "store (`credref audit keygen` makes one).",
    )
    audit_anchor_dir: Path | None = Field(
        None, description="Folder the regulator keeps elsewhere, for audit checkpoints."
    )
    audit_retention_days: int = Field(
        1095,
        ge=1,
        description="Audit rows older than this are deleted by `credref audit prune` (PIPL "
        "Art. 19: kept no longer than the purpose needs; set what the regulator requires).",
    )
    audit_anchor_minutes: float = Field(
        0.0, ge=0, description="The service writes a checkpoint this often (0: never)."
    )
    feed_dir: Path | None = Field(
        None, description="Folder of daily change sets that `credref refresh` applies."
    )
    online_dir: Path | None = Field(
        None, description="Online feature store, published snapshots (default: <home>/online)."
    )
    bentoml_home: Path | None = Field(
        None, description="BentoML's model store and config (default: <home>/bentoml)."
    )
    host: str = Field("127.0.0.1", description="Address the service listens on.")
    port: int = Field(3000, description="Port the service listens on.")
    workers: int = Field(2, ge=1, description="Service worker processes.")
    rate_limit: float = Field(
        2000.0, gt=0, description="Requests per second allowed per API key (whole service)."
    )
    auth_failure_limit: float = Field(
        5.0, gt=0, description="Failed authentications per second allowed per client address."
    )
    platform_daily_guesses: int = Field(
        20_000,
        ge=2,
        description="Mismatching verification claims a platform may make per day, over all "
        "its keys (a key at most half: serving.limits).",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For names the client (default: none; every peer is the client).",
    )
    audit_aggregate_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Refusals before authentication are audited as one row per client "
        "address, code and this many seconds (and worker), with their count.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="How the commands log on stderr: timestamped text lines, or one JSON "
        "object per line (time, level, logger, message) for a log collector.",
    )
    today: date | None = Field(
        None,
        description="The domain's clock: the day it is for the regulator's records "
        "(default: the calendar day in China Standard Time). Set it for a generated "
        "domain, whose records end on a day of their own.",
    )
    max_snapshot_age_days: int | None = Field(
        2,
        ge=0,
        description="Past this many days between the publication's as-of date and today, "
        "/readyz is not ready and score and verify answer 503 snapshot_stale; `off`: no guard.",
    )

    warehouse_path: ClassVar[Any] = _under_home("warehouse", "warehouse.duckdb")
    artifact_root: ClassVar[Any] = _under_home("mlflow_artifacts", "mlartifacts")
    keys_path: ClassVar[Any] = _under_home("keys_db", "keys.sqlite")
    audit_path: ClassVar[Any] = _under_home("audit_db", "audit.sqlite")
    limits_path: ClassVar[Any] = _under_home("limits_db", "limits.sqlite")
    watch_path: ClassVar[Any] = _under_home("watch_db", "watch.sqlite")
    online_path: ClassVar[Any] = _under_home("online_dir", "online")
    bentoml_path: ClassVar[Any] = _under_home("bentoml_home", "bentoml")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def traffic_timeout_s(self) -> float:
        """BentoML's own request timeout: past the gate's two, so that the gate, which
        audits, always answers first."""
        return self.body_timeout_s + self.answer_timeout_s + 10.0

    def domain_today(self) -> date:
        """Today, for the records: ``CREDREF_TODAY`` or the calendar day in Beijing."""
        return self.today or datetime.now(CST).date()

    def id_secret_bytes(self) -> bytes:
        value = self.id_hash_secret.get_secret_value()
        if value == DEV_ID_HASH_SECRET:
            logger.warning("using the development ID-hash secret; set CREDREF_ID_HASH_SECRET")
        return value.encode("utf-8")


def load_settings() -> Settings:
    """Read the settings from the environment."""
    return Settings()
