"""Unified social credit codes (GB 32100-2015) of individual businesses, checked with
python-stdnum: one function, used by ingestion and by the service, so both refuse a bad
code for the same reason in the same words.
"""

from __future__ import annotations

from stdnum.cn import uscc as stdnum_uscc

HOUSEHOLD_PREFIX = "92"  # registration authority 9 (market regulator), kind 2 (individual)


def compact(code: str) -> str:
    """The code without spaces or hyphens, in upper case (stdnum's canonical form)."""
    if len(code) == 18 and code.isascii() and code.isalnum() and code.upper() == code:
        return code  # already canonical (the usual case): skip stdnum's per-character pass
    return stdnum_uscc.compact(code)


def uscc_problem(code: str, household: bool = False) -> str | None:
    """Why ``code`` is not a valid USCC (of a household, if asked), or None if it is."""
    try:
        stdnum_uscc.validate(code)
    except stdnum_uscc.InvalidLength:
        return "uscc: wrong length (must be 18 characters)"
    except stdnum_uscc.InvalidChecksum:
        return "uscc: wrong check character"
    except stdnum_uscc.InvalidFormat:
        return "uscc: characters outside the GB 32100 charset"
    except stdnum_uscc.ValidationError as e:  # pragma: no cover - future stdnum kinds
        return f"uscc: invalid ({type(e).__name__})"
    if household and not compact(code).startswith(HOUSEHOLD_PREFIX):
        return "uscc: not an individual business code (must start with 92)"
    return None
