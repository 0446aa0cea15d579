"""credref's surfaces for people: the ``credref`` command and the analyst's API for notebooks."""

__version__ = "0.1.0"
