"""``python -m credref.cli``: the same as the ``credref`` command."""

from credref.cli.app import app

app()
