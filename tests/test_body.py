"""The one parser (serving.body): what it accepts, what it refuses, and that a refusal
never quotes the body."""

from __future__ import annotations

import json

import pytest
from stdnum.cn import uscc as s_uscc

from serving.body import (
    MAX_DEPTH,
    BodyRefused,
    check_content_type,
    parse_object,
    validate,
)
from serving.schemas import VerifyRequest

CODE = "92440300MA5DKQ0E2" + s_uscc.calc_check_digit("92440300MA5DKQ0E2")
SECRET_NAME = "张三丰"


def _refusal(fn, *args) -> BodyRefused:
    with pytest.raises(BodyRefused) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize(
    "value",
    [b"application/json", b"Application/JSON", b"application/json; charset=utf-8"],
)
def test_json_content_types_are_accepted(value):
    check_content_type([(b"content-type", value)])


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-type", b"application/x-www-form-urlencoded")],
        [(b"content-type", b"multipart/form-data; boundary=x")],
        [(b"content-type", b"text/plain")],
        [(b"content-type", b"application/json; charset=utf-16")],
        [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")],
    ],
)
def test_other_content_types_and_codings_are_415(headers):
    r = _refusal(check_content_type, headers)
    assert (r.status, r.code) == (415, "unsupported_media_type")


def test_a_plain_object_parses():
    assert parse_object(b'{"uscc": "%s", "n": 1, "x": [1.5]}' % CODE.encode()) == {
        "uscc": CODE,
        "n": 1,
        "x": [1.5],
    }


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"\xef\xbb\xbf" + json.dumps({"uscc": CODE}).encode(), "invalid_json"),  # BOM
        (json.dumps({"uscc": CODE}).encode("utf-16"), "invalid_json"),
        (json.dumps({"uscc": CODE}).encode("utf-32-le"), "invalid_json"),
        (b'{"uscc": "\xff\xfe"}', "invalid_json"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, "body_too_deep"),
        (b'{"a": ' + b'{"a": ' * (MAX_DEPTH) + b"1" + b"}" * (MAX_DEPTH + 1), "body_too_deep"),
        (b'{"n": ' + b"9" * 5000 + b"}", "invalid_json"),  # int() would refuse past 4,300
        (b'{"n": 1e' + b"9" * 400 + b"}", "invalid_json"),
        (b'{"n": NaN}', "invalid_json"),
        (b'{"n": -Infinity}', "invalid_json"),
        (b'{"uscc": "a", "uscc": "b"}', "invalid_json"),  # a field twice
        (b'["not", "an", "object"]', "invalid_json"),
        (b'"text"', "invalid_json"),
        (b"", "invalid_json"),
        (b'{"uscc": ', "invalid_json"),
    ],
)
def test_hostile_bodies_are_refused_with_a_stable_code(raw, code):
    r = _refusal(parse_object, raw)
    assert r.code == code and r.status == 400


def test_brackets_inside_strings_do_not_count_as_depth():
    parsed = parse_object(json.dumps({"name": "[[[[[[[[{{{{{{{{" * 10, "uscc": CODE}).encode())
    assert parsed["uscc"] == CODE


def test_unknown_fields_are_counted_never_named():
    name = "x" * 200_000 + SECRET_NAME
    r = _refusal(validate, {"uscc": CODE, "purpose": "onboarding", name: 1}, VerifyRequest)
    assert r.code == "unknown_field" and "1 field" in r.message
    assert SECRET_NAME not in r.message and len(r.message) < 200


def test_field_problems_name_the_field_not_the_value():
    r = _refusal(validate, {"uscc": SECRET_NAME, "operator_name": 3}, VerifyRequest)
    assert r.code == "invalid_request"
    assert {d["field"] for d in r.details} == {"uscc", "operator_name"}
    assert SECRET_NAME not in json.dumps(r.details) + r.message
