"""The vectorised USCC check equals python-stdnum's, code for code."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from stdnum.cn import uscc as s_uscc

from records.codes import uscc_problem, uscc_problems

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _random_strings(n: int, seed: int) -> list[str | None]:
    """Valid codes, their one-character mutations, other alphabets, lengths, cases,
    separators, full-width and other scripts, and nulls."""
    rng = np.random.default_rng(seed)
    pool = ALPHABET + "IOSVZ" + "abcxyz" + " -\t" + "０９ＡＹ" + "王é"
    out: list[str | None] = []
    for i in range(n):
        kind = i % 6
        if kind == 0:  # valid, household or not
            body = rng.choice(["92", "91", "93", "12"]) + "".join(rng.choice(list("0123456789"), 6))
            body += "".join(rng.choice(list(ALPHABET), 9))
            out.append(body + s_uscc.calc_check_digit(body))
        elif kind == 1:  # a valid code with one character changed
            body = (
                "92"
                + "".join(rng.choice(list("0123456789"), 6))
                + "".join(rng.choice(list(ALPHABET), 9))
            )
            code = list(body + s_uscc.calc_check_digit(body))
            code[int(rng.integers(0, 18))] = str(rng.choice(list(ALPHABET + "IOZ")))
            out.append("".join(code))
        elif kind == 2:  # 18 characters from the alphabet, any check character
            out.append("".join(rng.choice(list(ALPHABET), 18)))
        elif kind == 3:  # anything at all, of any length around 18
            out.append("".join(rng.choice(list(pool), int(rng.integers(0, 22)))))
        elif kind == 4:  # valid codes written loosely: lower case, spaces, hyphens
            body = (
                "92"
                + "".join(rng.choice(list("0123456789"), 6))
                + "".join(rng.choice(list(ALPHABET), 9))
            )
            code = (body + s_uscc.calc_check_digit(body)).lower()
            out.append(code[:6] + rng.choice([" ", "-", ""]) + code[6:])
        else:
            out.append(None if rng.random() < 0.5 else "")
    return out


def _scalar(codes, household: bool) -> list[str | None]:
    return [None if c is None else uscc_problem(c, household) for c in codes]


@pytest.mark.parametrize("household, n", [(False, 100_000), (True, 50_000)])
def test_random_strings_get_stdnums_answer(household, n):
    codes = _random_strings(n, seed=1 + household)
    fast = uscc_problems(pa.array(codes, pa.string()), household).to_pylist()
    assert fast == _scalar(codes, household)
    assert sum(p is None for p in fast) > n // 10  # valid codes among them
    assert {p for p in fast if p} >= {
        "uscc: wrong length (must be 18 characters)",
        "uscc: characters outside the GB 32100 charset",
        "uscc: wrong check character",
    }


def test_every_generated_code_gets_stdnums_answer(small_export):
    codes = duckdb.sql(f"SELECT uscc FROM '{small_export}/households.parquet'").fetch_arrow_table()[
        "uscc"
    ]
    fast = uscc_problems(codes, household=True).to_pylist()
    assert fast == _scalar(codes.to_pylist(), True)
    assert all(p is None for p in fast)


def test_a_sliced_array_is_read_from_its_own_offset():
    body = "92440300MA5DKQ0E2"
    good = body + s_uscc.calc_check_digit(body)
    arr = pa.array(["x" * 18, good, "Y" * 18, good])
    assert uscc_problems(arr.slice(1, 3)).to_pylist() == _scalar([good, "Y" * 18, good], False)
