"""Unified social credit codes (GB 32100-2015) of individual businesses, checked with
python-stdnum: one function, used by ingestion and by the service, so both refuse a bad
code for the same reason in the same words.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int32)
#: byte -> its value in the USCC alphabet, or -1 (lower case, I, O, S, V, Z, anything else)
_VALUE = np.full(256, -1, dtype=np.int8)
_BLOCK = 1 << 20
_VALUE[np.frombuffer(_ALPHABET.encode(), dtype=np.uint8)] = np.arange(len(_ALPHABET))
_PROBLEM = {
    1: "uscc: characters outside the GB 32100 charset",
    2: "uscc: wrong check character",
    3: "uscc: not an individual business code (must start with 92)",
}


def uscc_problems(codes: pa.Array, household: bool = False) -> pa.Array:
    """:func:`uscc_problem` for a whole Arrow string array at once, equal to it code for
    code (a test holds them equal on every generated code and a million random strings).

    Codes already in stdnum's canonical form (18 ASCII letters and digits, upper case: what
    an export holds) are checked with numpy on their bytes; anything else (lower case,
    spaces, hyphens, other lengths, other scripts, nulls) goes through stdnum itself, so
    stdnum stays the definition."""
    codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
    canonical = pc.and_(
        pc.and_(pc.equal(pc.binary_length(codes), 18), pc.ascii_is_alnum(codes)),
        pc.equal(codes, pc.ascii_upper(codes)),
    )
    canonical = pc.fill_null(canonical, False).to_numpy(zero_copy_only=False)
    # Each row points into one list of answers: None, the three fast-path problems, then
    # stdnum's answer for each row that is not canonical.
    answers: list[str | None] = [None, _PROBLEM[1], _PROBLEM[2], _PROBLEM[3]]
    index = np.zeros(len(codes), dtype=np.int64)
    fast = np.flatnonzero(canonical)
    for start in range(0, len(fast), _BLOCK):  # blocks keep the byte matrices small
        part = fast[start : start + _BLOCK]
        index[part] = _canonical_kinds(codes.take(pa.array(part)), household)
    for i in np.flatnonzero(~canonical):
        code = codes[int(i)].as_py()
        index[i] = len(answers)
        answers.append(None if code is None else uscc_problem(code, household))
    return pa.array(answers, pa.string()).take(pa.array(index))


def _canonical_kinds(codes: pa.Array, household: bool) -> np.ndarray:
    """The checks of ``stdnum.cn.uscc.validate`` in its order (format: digits in the first
    8, the alphabet after; then the check character), then the household prefix."""
    offsets = np.frombuffer(codes.buffers()[1], dtype=np.int32)[codes.offset :]
    data = np.frombuffer(codes.buffers()[2], dtype=np.uint8)
    raw = data[offsets[0] : offsets[0] + 18 * len(codes)].reshape(-1, 18)
    values = _VALUE[raw]
    bad_format = (values[:, :8] > 9).any(axis=1) | (values[:, :8] < 0).any(axis=1)
    bad_format |= (values[:, 8:] < 0).any(axis=1)
    check = (31 - (values[:, :17].astype(np.int32) @ _WEIGHTS) % 31) % 31
    bad_check = ~bad_format & (check != values[:, 17])
    not_household = (raw[:, 0] != ord("9")) | (raw[:, 1] != ord("2"))
    return np.where(
        bad_format, 1, np.where(bad_check, 2, np.where(household & not_household, 3, 0))
    )
