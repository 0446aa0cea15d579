"""``python -m credref``: the same as the ``credref`` command."""

from credref.cli.app import run

if __name__ == "__main__":
    run()
