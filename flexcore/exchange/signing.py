"""Ed25519 signatures and canonical bytes for the files that cross the DSO/TSO boundary.

A key pair is two PEM files: ``KEY`` (PKCS#8 private key, mode 0600, written by
``flexcosim keygen --out KEY``) and ``KEY.pub`` (SubjectPublicKeyInfo public key, the one
to hand to the other side). A *signature record* is a small JSON object::

    {"format": "flexcosim-signature", "version": 1, "algorithm": "Ed25519",
     "purpose": "flexcosim-sensitivity-package", "sha256": "<hex digest signed>",
     "key_id": "<16 hex>", "public_key": "<base64 raw 32 bytes>", "signature": "<base64>"}

The signed bytes are :func:`canonical_json` of ``{"purpose": ..., "sha256": ...}``, so a
signature made for a package can never pass as one for a clearing. ``key_id`` is the first
16 hex digits of the SHA-256 of the raw public key. A record is checked against the
*trusted* public keys when some are given (the sender's key, ``--trust``), else only against
the key it names (that proves the file is unchanged since signing, not who signed it).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from flexcore.errors import FlexcosimError

SIGNATURE_FORMAT = "flexcosim-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "Ed25519"

TrustSpec = str | os.PathLike[str] | Ed25519PublicKey


class SignatureError(FlexcosimError, ValueError):
    """A key file or signature that cannot be used: missing, malformed, not matching the
    signed content, or made with a key that is not trusted."""


class StrictJSONError(FlexcosimError, ValueError):
    """A JSON document with duplicate keys, NaN/Infinity or invalid syntax."""


# --------------------------------------------------------------------------- strict JSON
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a number JSON allows")


def loads_strict(text: str | bytes, *, source: str) -> Any:
    """``json.loads`` refusing duplicate keys and NaN/Infinity; errors name ``source``."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except StrictJSONError as exc:
        raise StrictJSONError(f"{source}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StrictJSONError(f"{source}: not valid JSON ({exc})") from None


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes that digests and signatures
    cover (equal for any two files that parse to the same object)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def finite_json(obj: Any) -> bool:
    """True when every number in ``obj`` is finite (the values of dicts, lists and tuples,
    recursively; other objects count as finite). The JSON encoder's own check, in C, decides
    the common case; only an object it refuses is walked in Python."""
    try:
        json.dumps(obj, allow_nan=False, default=lambda _: None)
    except (ValueError, TypeError):   # TypeError: a dict key JSON cannot hold
        return _finite_walk(obj)
    return True


def _finite_walk(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_walk(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite_walk(v) for v in obj)
    return True


# --------------------------------------------------------------------------- keys
def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return sha256_hex(_raw(public))[:16]


def generate_keypair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``;
    refuses to overwrite either file."""
    priv_path = Path(path)
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    for p in (priv_path, pub_path):
        if p.exists():
            raise SignatureError(f"{p}: exists; refusing to overwrite a key file")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pub)
    return priv_path, pub_path


def _read_key_file(path: Path) -> bytes:
    if not path.is_file():
        raise SignatureError(f"key file not found: {path}")
    return path.read_bytes()


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(_read_key_file(p), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{p}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{p}: not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(_read_key_file(p))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{p}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{p}: not an Ed25519 public key")
    return key


def as_private_key(key: str | os.PathLike[str] | Ed25519PrivateKey) -> Ed25519PrivateKey:
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)


def trusted_keys(trust: Iterable[TrustSpec]) -> list[Ed25519PublicKey]:
    return [t if isinstance(t, Ed25519PublicKey) else load_public_key(t) for t in trust]


# --------------------------------------------------------------------------- records
def _payload(purpose: str, digest: str) -> bytes:
    return canonical_json({"purpose": purpose, "sha256": digest})


def sign_digest(digest: str, key: str | os.PathLike[str] | Ed25519PrivateKey, *,
                purpose: str) -> dict[str, Any]:
    """The signature record of ``digest`` (hex SHA-256) for ``purpose``."""
    priv = as_private_key(key)
    pub = priv.public_key()
    return {"format": SIGNATURE_FORMAT, "version": SIGNATURE_VERSION, "algorithm": ALGORITHM,
            "purpose": purpose, "sha256": digest, "key_id": key_id(pub),
            "public_key": base64.b64encode(_raw(pub)).decode("ascii"),
            "signature": base64.b64encode(priv.sign(_payload(purpose, digest))).decode("ascii")}


def record_bytes(record: dict[str, Any]) -> bytes:
    """The bytes of a signature record file (``SIGNATURE.json``)."""
    return json.dumps(record, indent=1).encode("utf-8")


def write_record(record: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.write_bytes(record_bytes(record))
    return p


def verify_record(record: Any, digest: str, *, purpose: str, trust: Iterable[TrustSpec] = (),
                  source: str) -> str:
    """Check a signature record over ``digest``; returns the signer's key id. With
    ``trust``, the signer must be one of those keys. Raises SignatureError naming
    ``source``."""
    if not isinstance(record, dict) or record.get("format") != SIGNATURE_FORMAT \
            or record.get("version") != SIGNATURE_VERSION \
            or record.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{source}: not a {SIGNATURE_FORMAT} v{SIGNATURE_VERSION} "
                             f"{ALGORITHM} record")
    for field in ("purpose", "sha256", "key_id", "public_key", "signature"):
        if not isinstance(record.get(field), str):
            raise SignatureError(f"{source}: field '{field}' must be a string")
    if record["purpose"] != purpose:
        raise SignatureError(f"{source}: signature is for {record['purpose']!r}, "
                             f"not {purpose!r}")
    if record["sha256"] != digest:
        raise SignatureError(f"{source}: signature covers digest {record['sha256'][:12]}..., "
                             f"the content is {digest[:12]}...: modified after signing")
    try:
        raw_pub = base64.b64decode(record["public_key"], validate=True)
        sig = base64.b64decode(record["signature"], validate=True)
        signer = Ed25519PublicKey.from_public_bytes(raw_pub)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{source}: malformed key or signature ({exc})") from None
    keys = trusted_keys(trust)
    if keys:
        match = [k for k in keys if _raw(k) == raw_pub]
        if not match:
            raise SignatureError(f"{source}: signed by key {key_id(signer)}, which is not "
                                 f"trusted (trusted: {[key_id(k) for k in keys]})")
    try:
        signer.verify(sig, _payload(purpose, digest))
    except InvalidSignature:
        raise SignatureError(f"{source}: invalid signature (key {key_id(signer)})") from None
    return key_id(signer)


def check_signature_file(path: Path, digest: str, *, purpose: str,
                         trust: Iterable[TrustSpec] = (), require_signature: bool = False,
                         what: str) -> str | None:
    """Verify the signature record at ``path`` if present; returns the signer's key id or
    None when unsigned. Trusted keys or ``require_signature`` make a signature mandatory."""
    return check_signature_bytes(path.read_bytes() if path.is_file() else None, digest,
                                 source=str(path), purpose=purpose, trust=trust,
                                 require_signature=require_signature, what=what)


def check_signature_bytes(data: bytes | None, digest: str, *, source: str, purpose: str,
                          trust: Iterable[TrustSpec] = (), require_signature: bool = False,
                          what: str) -> str | None:
    """:func:`check_signature_file` of a record held in memory (``None``: no record);
    errors name ``source`` as they name the file."""
    trust = list(trust)
    if data is None:
        if trust or require_signature:
            raise SignatureError(f"{what} is not signed ({source} missing) but a signature is "
                                 "required")
        return None
    try:
        record = loads_strict(data, source=source)
    except StrictJSONError as exc:   # a record that is no JSON is a bad signature
        raise SignatureError(str(exc)) from None
    return verify_record(record, digest, purpose=purpose, trust=trust, source=source)
