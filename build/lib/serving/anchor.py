"""Signed checkpoints of the audit chain, kept outside the audit store.

The hash chain (:mod:`serving.audit`) shows an edited or deleted row, but not a chain that
an insider with write access rewrote from the start, nor a cut tail. A checkpoint fixes
the chain's state at one moment: ``{"seq", "hash", "rows", "at"}``, signed with Ed25519
(``cryptography``) under a key that lives apart from the store (its path is the setting
``CREDREF_AUDIT_ANCHOR_KEY``). Checkpoints are written to a folder the regulator keeps
elsewhere (``CREDREF_AUDIT_ANCHOR_DIR``: another machine's mount, write-once storage) by
``credref audit anchor``, or every ``CREDREF_AUDIT_ANCHOR_MINUTES`` by the service.

``credref audit verify --anchors DIR`` checks each checkpoint's signature (with the public
key only), that its row still has its hash, and that the chain is intact: it passes on a
log that has grown since and fails on any edit, deletion, truncation or rewritten prefix
up to the last checkpoint. After the last checkpoint, a cut tail or a rewritten tail is
not detectable: SECURITY.md says so.

Retention (:func:`prune`, ``credref audit prune``): rows older than the retention period
are deleted after a checkpoint is signed at the last of them; the remaining chain links on
from that signed base, and ``verify --anchors`` fails if the base is not one.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from serving.audit import AuditLog, VerifyReport

FORMAT = "credref-audit-checkpoint/1"
logger = logging.getLogger(__name__)


class AnchorError(RuntimeError):
    """A key or checkpoint cannot be read or written."""


def generate_key(path: Path) -> Path:
    """A new Ed25519 signing key at ``path`` (mode 0600) and its public key at
    ``path.pub``; refuses to overwrite a key."""
    if path.exists():
        raise AnchorError(f"{path} exists; a signing key is never overwritten")
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path(path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path(path)


def public_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def _private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise AnchorError(f"signing key {path} cannot be read: {type(e).__name__}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key file, or the public half of a private key file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AnchorError(f"key {path} cannot be read: {type(e).__name__}") from e
    if b"PRIVATE KEY" in data:
        return _private(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path} is not an Ed25519 public key")
    return key


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def write_anchor(log: AuditLog, key_path: Path, out_dir: Path) -> Path:
    """Sign the chain's current head and write it to ``out_dir``; returns the file."""
    report = log.verify()
    if not report.ok:
        raise AnchorError("the chain is broken; a checkpoint would vouch for a damaged log")
    return _sign(key_path, out_dir, report.head_seq, report.head_hash, report.rows)


def prune(log: AuditLog, key_path: Path, out_dir: Path, before: str) -> tuple[int, int]:
    """Retention: delete the rows written before ``before`` (ISO time), after signing a
    checkpoint at the last of them, which becomes the remaining chain's base; returns
    (the base's row number, rows deleted). ``verify --anchors`` then checks the rest from
    that signed base, so a pruned log is as verifiable as a whole one."""
    report = log.verify()
    if not report.ok:
        raise AnchorError("the chain is broken; fix or keep it before pruning")
    through = log.last_before(before)
    if through is None:
        return (log.base() or (0, ""))[0], 0
    _sign(key_path, out_dir, through[0], through[1], report.rows)
    return through[0], log.prune(through)


def _sign(key_path: Path, out_dir: Path, seq: int, head: str, rows: int) -> Path:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    body = {"format": FORMAT, "seq": seq, "rows": rows, "hash": head, "at": at}
    signature = _private(key_path).sign(_canonical(body))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"checkpoint-{seq:012d}-{at.replace(':', '')}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**body, "signature": base64.b64encode(signature).decode()}))
    os.replace(tmp, path)  # a reader never sees half a checkpoint
    return path


@dataclass(frozen=True)
class Checkpoint:
    file: str
    seq: int
    hash: str
    signed: bool


def read_checkpoints(folder: Path, public: Ed25519PublicKey) -> list[Checkpoint]:
    """Every checkpoint in ``folder``, with whether its signature holds."""
    out = []
    for path in sorted(folder.glob("checkpoint-*.json")):
        doc: dict = {}
        try:
            loaded = json.loads(path.read_text())
            doc = loaded if isinstance(loaded, dict) else {}
            signature = base64.b64decode(doc.pop("signature"))
            public.verify(signature, _canonical(doc))
            signed = doc.get("format") == FORMAT and isinstance(doc.get("seq"), int)
        except (InvalidSignature, ValueError, KeyError, TypeError, OSError):
            signed = False
        seq = doc.get("seq") if signed else 0
        out.append(Checkpoint(path.name, int(seq or 0), str(doc.get("hash", "")), signed))
    return out


def verify_anchored(log: AuditLog, folder: Path, public: Ed25519PublicKey) -> VerifyReport:
    """The chain checked against every signed checkpoint in ``folder``."""
    checkpoints = read_checkpoints(folder, public)
    report = log.verify(checkpoints=[(c.seq, c.hash) for c in checkpoints if c.signed and c.seq])
    unsigned = [
        f"{c.file}: signature does not hold (forged or altered)"
        for c in checkpoints
        if not c.signed
    ]
    if not checkpoints:
        unsigned.append(f"no checkpoints in {folder}")
    base = log.base()
    if base and base not in {(c.seq, c.hash) for c in checkpoints if c.signed}:
        unsigned.append(
            f"the pruned log starts after row {base[0]}, which no signed checkpoint vouches for"
        )
    report.problems.extend(unsigned)
    return report


def start_periodic(log: AuditLog, key_path: Path, out_dir: Path, minutes: float) -> threading.Event:
    """Write a checkpoint every ``minutes`` on a daemon thread, until the returned event is
    set. A failed write is logged (its type only) and tried again next time."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(minutes * 60):
            try:
                write_anchor(log, key_path, out_dir)
            except Exception as e:  # keep anchoring; the log says it failed
                logger.error("audit checkpoint not written: %s", type(e).__name__)

    threading.Thread(target=run, name="audit-anchor", daemon=True).start()
    return stop
