"""How the ``credref`` command ends when something is wrong: one line on stderr naming
the thing at fault, exit 2, no traceback (``credref -v`` keeps it, for debugging).

Expected failures are the ones the world causes: a missing or unreadable file, a wrong
setting, a model version or run that does not exist, a refused refresh, a library
refusing a parameter. Anything else is a defect: one line too, exit 1, and the hint to
rerun with ``-v``."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable

import duckdb
import pyarrow as pa
from pydantic import ValidationError
from rich.console import Console

#: Where errors go: stderr, so a command's output (tables, CSV) stays clean in a pipe.
errors = Console(stderr=True, width=160)

#: Exceptions the world causes, by class (a subclass counts).
EXPECTED: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    sqlite3.Error,
    duckdb.Error,
    pa.ArrowException,
)
#: ... and by the library that raises them (not imported here: MLflow and LightGBM are
#: heavy; psycopg, SQLAlchemy and Alembic load only with a shared database).
EXPECTED_FROM = ("mlflow.", "lightgbm.", "psycopg", "sqlalchemy.", "alembic.", "serving.state")


def expected(e: BaseException) -> bool:
    return isinstance(e, EXPECTED) or type(e).__module__.startswith(EXPECTED_FROM)


def describe(e: BaseException) -> str:
    """One line: a setting's name and problem (never its value), else the message."""
    if isinstance(e, ValidationError):
        problems = [
            f"CREDREF_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False, include_context=False)
        ]
        return "setting " + "; ".join(problems)
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"not found: {e.filename}"
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def say(message: str, label: str = "[red]error:[/red] ") -> None:
    """One line on stderr (an error, unless ``label`` says otherwise)."""
    errors.print(f"{label}{message}", soft_wrap=True, highlight=False)


def _usage_error(e: BaseException) -> bool:
    """A wrong command line, as Click reports it (Typer carries its own copy of Click, so
    it is told by what it has: a message and an exit code)."""
    return hasattr(e, "format_message") and hasattr(e, "exit_code")


def run(app: Callable[..., object], argv: list[str]) -> None:
    """Run the Typer ``app``; an exception becomes one line and an exit code."""
    verbose = any(a in ("-v", "--verbose") for a in argv[1:2])
    try:
        code = app(standalone_mode=False)  # the errors are said here, each in one line
    except Exception as e:  # the command's last word: every error is said
        if _usage_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":  # `credref` alone: the help
                e.show()  # type: ignore[attr-defined]
                sys.exit(0)
            say(f"{e.format_message()} (see --help)")  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if verbose:
            raise
        if expected(e):
            say(describe(e))
            sys.exit(2)
        say(f"{type(e).__name__}: {describe(e)} (an internal error; rerun with -v for details)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
