"""Field verification without keeping or returning the stored values.

The online store holds, for each household, keyed hashes of the normalised registered
name, operator name and address, and the warehouse's keyed hash of the operator's ID
number. A claim is normalised the same way and hashed with the same key, so the service
can say ``match`` / ``mismatch`` while holding no readable personal information itself.

Normalisation (both sides): Unicode NFKC (full-width letters, digits and spaces become
half-width; composed and decomposed accents become one form), every whitespace removed,
case folded. ID numbers: :func:`records.identity.normalise_id`, the one definition the
warehouse's ``operator_id_hmac`` is computed with too.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from enum import StrEnum
from typing import Any

from records.identity import id_hmac_bytes

#: Bytes kept of each field hash: 128 bits, ample for equality of one household's field.
FIELD_HASH_BYTES = 16
_FIELD_KEY_LABEL = b"credref/verify/fields/v1"


class Verdict(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    NOT_PROVIDED = "not_provided"


def normalise_text(value: str) -> str:
    folded = unicodedata.normalize("NFKC", value).casefold()
    return unicodedata.normalize("NFKC", "".join(folded.split()))


class FieldHasher:
    """Keyed hashes for verification; the field key is derived from the ID-hash secret."""

    def __init__(self, secret: bytes):
        self._id_key = secret
        self._field_key = hmac.new(secret, _FIELD_KEY_LABEL, hashlib.sha256).digest()

    def field(self, kind: str, value: str | None) -> bytes | None:
        """Hash of a text field (``kind`` separates name, operator and address)."""
        if value is None:
            return None
        msg = kind.encode() + b"\x00" + normalise_text(value).encode("utf-8")
        return hmac.new(self._field_key, msg, hashlib.sha256).digest()[:FIELD_HASH_BYTES]

    def id_number(self, value: str) -> bytes:
        """HMAC-SHA256 of an ID number, equal to the warehouse's ``operator_id_hmac``."""
        return id_hmac_bytes(value, self._id_key)


def verdict(claimed: bytes | None, stored: bytes | None) -> Verdict:
    if claimed is None:
        return Verdict.NOT_PROVIDED
    if stored is not None and hmac.compare_digest(claimed, stored):
        return Verdict.MATCH
    return Verdict.MISMATCH


#: The request's claim fields, as named in answers, limits and metrics.
CLAIM_FIELDS = ("name", "operator_name", "operator_id_number", "address")


def claimed_fields(req: Any) -> tuple[str, ...]:
    """The fields a verification request claims (the others are ``not_provided``)."""
    return tuple(f for f in CLAIM_FIELDS if getattr(req, f) is not None)


def judge(hasher: FieldHasher, req: Any, subject: Any) -> dict[str, Verdict]:
    """Each field's verdict: the claim's keyed hash against the stored one."""
    return {
        "name": verdict(hasher.field("name", req.name), subject.name_h),
        "operator_name": verdict(hasher.field("operator", req.operator_name), subject.operator_h),
        "operator_id_number": verdict(
            None if req.operator_id_number is None else hasher.id_number(req.operator_id_number),
            subject.id_h,
        ),
        "address": verdict(hasher.field("address", req.address), subject.address_h),
    }
