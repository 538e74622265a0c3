"""Sensitivity packages as signed bytes: the form in which a package crosses inside a
message (a mosaik message between processes or machines), where a folder path would mean
nothing on the other side.

Format ``flexcosim-package-bytes``, version 1: a ZIP archive (stored, no compression, fixed
member times) whose zip comment is ``flexcosim-package-bytes v1`` and which holds exactly
the files of a package folder (:mod:`flexcore.exchange.package`): ``manifest.json``,
``arrays.npz`` and ``SIGNATURE.json`` (the Ed25519 record over the package digest). Nothing
else is allowed (no directories, no other member, no duplicate names). In a JSON message
the bytes travel as base64 text (:func:`package_to_text`, :func:`package_from_text`).

Reading (:func:`package_from_bytes`) checks the archive (size cap, comment, member names,
declared member sizes) before it reads a member, and reads the three files in memory with
:func:`~flexcore.exchange.package.load_package_files`, the in-memory twin of
:func:`~flexcore.exchange.package.load_package`: the same strict manifest schema, digest,
signature (mandatory, by one of the ``trusted`` keys), ``.npy`` header
and array checks as for a folder. Any problem raises a
:class:`~flexcore.exchange.points.PackageError` or
:class:`~flexcore.exchange.signing.SignatureError` naming ``source`` (never a temporary
folder; a member is named ``<source>/<member>``). Nothing touches the disk on either side:
:func:`package_to_bytes` zips :func:`~flexcore.exchange.package.package_files`, the bytes
:func:`~flexcore.exchange.package.save_package` writes. No pickle anywhere.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import zipfile
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flexcore.exchange.package import (
    ARRAYS,
    MANIFEST,
    MAX_BYTES,
    MAX_MANIFEST_BYTES,
    SIGNATURE,
    AnyPackage,
    load_package_files,
    package_files,
)
from flexcore.exchange.points import PackageError
from flexcore.exchange.signing import SignatureError, TrustSpec

WIRE_FORMAT = "flexcosim-package-bytes"
WIRE_VERSION = 1
_COMMENT = f"{WIRE_FORMAT} v{WIRE_VERSION}".encode("ascii")
_MEMBERS = (MANIFEST, ARRAYS, SIGNATURE)
#: cap on a signature record (bytes)
MAX_SIGNATURE_BYTES = 64 * 2**10
_EPOCH = (1980, 1, 1, 0, 0, 0)


def package_to_bytes(package: AnyPackage,
                     signing_key: str | os.PathLike[str] | Ed25519PrivateKey) -> bytes:
    """The package, signed with ``signing_key``, as ``flexcosim-package-bytes`` v1."""
    files = package_files(package, signing_key=signing_key)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.comment = _COMMENT
        for name in _MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            zf.writestr(info, files[name])
    return buf.getvalue()


def _caps(max_bytes: int) -> dict[str, int]:
    return {MANIFEST: MAX_MANIFEST_BYTES, ARRAYS: max_bytes + MAX_MANIFEST_BYTES,
            SIGNATURE: MAX_SIGNATURE_BYTES}


def package_from_bytes(data: bytes, *, trusted: Iterable[TrustSpec], source: str = "package",
                       allow_full: bool = False, max_bytes: int = MAX_BYTES) -> AnyPackage:
    """Check and read ``flexcosim-package-bytes``; the signature is mandatory and must be
    by one of the ``trusted`` public keys (at least one). ``allow_full``: accept a format-1
    package (the full linear model). Errors name ``source``."""
    trust = list(trusted)
    if not trust:
        raise SignatureError(f"{source}: no trusted key given; package bytes are only read "
                             "with their sender's public key")
    if not isinstance(data, (bytes, bytearray)):
        raise PackageError(f"{source}: package bytes expected, got {type(data).__name__}")
    caps = _caps(max_bytes)
    if len(data) > sum(caps.values()) + 2**16:
        raise PackageError(f"{source}: {len(data)} bytes, above the cap of "
                           f"{sum(caps.values())} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            if zf.comment != _COMMENT:
                raise PackageError(f"{source}: not {WIRE_FORMAT} v{WIRE_VERSION} (zip comment "
                                   f"{zf.comment[:40]!r})")
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if sorted(names) != sorted(_MEMBERS):
                raise PackageError(f"{source}: holds members {names[:8]}, expected exactly "
                                   f"{list(_MEMBERS)}")
            for info in infos:
                if info.file_size > caps[info.filename]:
                    raise PackageError(f"{source}: member {info.filename} declares "
                                       f"{info.file_size} bytes, above its cap of "
                                       f"{caps[info.filename]}")
            parts = {i.filename: zf.read(i) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            NotImplementedError) as exc:
        raise PackageError(f"{source}: not a readable {WIRE_FORMAT} archive ({exc})") from None
    return load_package_files(parts, source=source, allow_full=allow_full, trust=trust,
                              require_signature=True, max_bytes=max_bytes)


def package_to_text(package: AnyPackage,
                    signing_key: str | os.PathLike[str] | Ed25519PrivateKey) -> str:
    """:func:`package_to_bytes` as base64 text (for JSON messages)."""
    return base64.b64encode(package_to_bytes(package, signing_key)).decode("ascii")


def package_from_text(text: str, *, trusted: Iterable[TrustSpec], source: str = "package",
                      allow_full: bool = False, max_bytes: int = MAX_BYTES) -> AnyPackage:
    """:func:`package_from_bytes` of base64 text."""
    if not isinstance(text, str):
        raise PackageError(f"{source}: base64 text expected, got {type(text).__name__}")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise PackageError(f"{source}: not valid base64 ({exc})") from None
    return package_from_bytes(data, trusted=trusted, source=source, allow_full=allow_full,
                              max_bytes=max_bytes)


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as PEM text (SubjectPublicKeyInfo): what a DSO hands to the TSO."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_key_from_pem(text: str, *, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text; SignatureError naming ``source`` otherwise."""
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, AttributeError) as exc:
        raise SignatureError(f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{source}: not an Ed25519 public key")
    return key
