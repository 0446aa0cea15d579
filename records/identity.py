"""Personal identifiers as credref keeps them: normalised, then keyed-hashed, never raw.

One definition for both sides of verification: the warehouse's ``operator_id_hmac``
(computed by the registration export, or by the synthetic generator) and the service's
hash of a claimed ID number must agree byte for byte, so both call :func:`id_hmac`.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata


def normalise_id(value: str) -> str:
    """A resident ID number in one form: Unicode NFKC (full-width digits become ASCII),
    every whitespace removed, upper case (the check character ``X``)."""
    return "".join(unicodedata.normalize("NFKC", value).split()).upper()


def id_hmac_bytes(value: str, secret: bytes) -> bytes:
    """HMAC-SHA256 of the normalised ID number under the in-domain secret."""
    return hmac.new(secret, normalise_id(value).encode(), hashlib.sha256).digest()


def id_hmac(value: str, secret: bytes) -> str:
    """The stored form: :func:`id_hmac_bytes` in hex (``operator_id_hmac``)."""
    return id_hmac_bytes(value, secret).hex()
