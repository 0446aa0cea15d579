"""credref: credit-risk reference scoring on market-regulator records."""

__version__ = "0.1.0"
