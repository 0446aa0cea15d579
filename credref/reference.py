"""The reference of every command and setting, generated from the code so it cannot drift.

``make docs`` (``python -m credref.reference docs/reference.md``) writes it;
``tests/test_docs.py`` fails when the file and the code disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from credref.cli.app import app
from settings import Settings

HEADER = """# Reference: commands and settings

Generated from the code by `make docs` (`credref/reference.py`); a test fails when this
file and the code disagree, so edit the commands' help or the settings' descriptions, not
this file. What each is for: the guides in this folder.
"""


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


# Typer 0.29 carries its own copy of Click: parameters and groups are told apart by what
# they are (param_type_name, list_commands), not by Click's classes.


def _usage(name: str, command) -> str:
    parts = [name]
    for p in command.params:
        if p.param_type_name == "argument":
            parts.append(p.name.upper())
    if any(p.param_type_name == "option" for p in command.params):
        parts.append("[OPTIONS]")
    return " ".join(parts)


def _option_rows(command) -> list[str]:
    rows = []
    for p in command.params:
        if p.param_type_name == "option" and p.name != "help":
            flags = ", ".join(f"`{o}`" for o in p.opts)
            default = "" if p.required or p.default is None else f"`{p.default}`"
            required = "required" if p.required else default
            rows.append(f"| {flags} | {required} | {_cell(p.help)} |")
        elif p.param_type_name == "argument":
            rows.append(f"| `{p.name.upper()}` | argument | {_cell(getattr(p, 'help', ''))} |")
    return rows


def _commands(group, prefix: str) -> list[str]:
    out = []
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        full = f"{prefix} {name}"
        if hasattr(command, "list_commands"):
            out += _commands(command, full)
            continue
        out += [f"### `{_usage(full, command)}`", "", _cell(command.help), ""]
        rows = _option_rows(command)
        if rows:
            out += ["| option | default | meaning |", "|---|---|---|", *rows, ""]
    return out


def _settings() -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        if name == "id_hash_secret":
            default = "a public development secret (a warning is logged)"
        rows.append(f"| `CREDREF_{name.upper()}` | {default} | {_cell(field.description)} |")
    return rows


def render() -> str:
    command = typer.main.get_command(app)
    lines = [HEADER, "## Commands", "", _cell(command.help), ""]
    lines += ["Global option: `credref -v ...` logs progress details.", ""]
    lines += _commands(command, "credref")
    lines += ["## Settings", "", "Read from `CREDREF_*` environment variables (`settings/`)."]
    lines += ["", *_settings(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    text = render()
    if target is None:
        sys.stdout.write(text)
    else:
        target.write_text(text)
