"""Package bytes are read in memory (:func:`flexcore.exchange.package.load_package_files`)
with the checks and errors of the folder reader (:func:`~flexcore.exchange.package.
load_package`): for intact and damaged archives, the in-memory reader gives what the former
reader gave (the members written into a folder, read with ``load_package``, the folder's
path replaced by the source name), and writing gives the bytes ``save_package`` writes."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.exchange.package import (
    ARRAYS,
    MANIFEST,
    SIGNATURE,
    SensitivityPackage,
    load_package,
    package_files,
    save_package,
)
from flexcore.exchange.points import PackageError, PointInfo
from flexcore.exchange.signing import SignatureError
from flexcore.exchange.wire import package_from_bytes, package_to_bytes

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def _package() -> SensitivityPackage:
    rng = np.random.default_rng(3)
    m, n, v, l = 2, 3, 4, 2
    return SensitivityPackage(
        columns=("a", "b", "c"), vm_rows=("v0", "v1", "v2", "v3"), loading_rows=("l0", "l1"),
        points=(PointInfo("p0", 0.0), PointInfo("p1", 1.0)),
        p_flex_mw=np.vstack([np.zeros(n), np.ones(n)]), vm_pu=1 + 0.01 * rng.random((m, v)),
        loading_percent=50 * rng.random((m, l)), vtdf=1e-3 * rng.random((m, v, n)),
        ltdf=rng.random((m, l, n)))


def zip_members(data: bytes) -> dict[str, bytes]:
    """The members of a package's bytes (a zip), by name."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rezip(parts: dict[str, bytes], comment: bytes) -> bytes:
    """``parts`` zipped again under ``comment`` (valid CRCs: what a forger can do)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.comment = comment
        for k, v in parts.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _via_folder(data: bytes, tmp: Path, source: str, trusted) -> object:
    """The former reader: the members into a folder, ``load_package`` of it (the same
    checks: this module compares only messages and types)."""
    folder = tmp / "p"
    folder.mkdir()
    for name, blob in zip_members(data).items():
        (folder / name).write_bytes(blob)
    try:
        return load_package(folder, allow_full=True, trust=trusted, require_signature=True)
    except (PackageError, SignatureError) as exc:
        return type(exc), str(exc).replace(str(folder), source)


def _in_memory(data: bytes, source: str, trusted) -> object:
    try:
        return package_from_bytes(data, trusted=trusted, allow_full=True, source=source)
    except (PackageError, SignatureError) as exc:
        return type(exc), str(exc)


def _edit_manifest(parts, change):
    m = json.loads(parts[MANIFEST])
    change(m)
    return parts | {MANIFEST: json.dumps(m, indent=1).encode()}


def _flip(blob: bytes, at: int) -> bytes:
    b = bytearray(blob)
    b[at] ^= 0x01
    return bytes(b)


CASES = {
    "intact": lambda p: p,
    "manifest value": lambda p: _edit_manifest(p, lambda m: m["limits"].update(vm_max_pu=1.2)),
    "unknown field": lambda p: _edit_manifest(p, lambda m: m.update(extra=1)),
    "shape": lambda p: _edit_manifest(p, lambda m: m["shapes"].update(vtdf=[2, 4, 4])),
    "arrays byte": lambda p: p | {ARRAYS: _flip(p[ARRAYS], len(p[ARRAYS]) // 2)},
    "arrays header": lambda p: p | {ARRAYS: p[ARRAYS].replace(b"<f8", b"<f4", 1)},
    "signature": lambda p: p | {SIGNATURE: p[SIGNATURE].replace(b'"sha256": "',
                                                                 b'"sha256": "0', 1)},
    "signature json": lambda p: p | {SIGNATURE: b"{"},
    "manifest json": lambda p: p | {MANIFEST: b'{"a": NaN}'},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("trusted", ["own", "other"])
def test_in_memory_reader_equals_the_folder_reader(case, trusted, tmp_path):
    data = package_to_bytes(_package(), KEY)
    comment = zipfile.ZipFile(io.BytesIO(data)).comment
    bad = data if case == "intact" else rezip(CASES[case](zip_members(data)), comment)
    keys = [(KEY if trusted == "own" else OTHER).public_key()]
    new = _in_memory(bad, "bytes from lv-7", keys)
    old = _via_folder(bad, tmp_path, "bytes from lv-7", keys)
    if case == "intact" and trusted == "own":
        assert isinstance(new, SensitivityPackage) and isinstance(old, SensitivityPackage)
        for name in ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf"):
            np.testing.assert_array_equal(getattr(new, name), getattr(old, name))
            assert getattr(new, name).flags.writeable
        return
    assert isinstance(new, tuple), f"{case}: read although damaged"
    assert new == old
    assert "bytes from lv-7" in new[1] and str(tmp_path) not in new[1]


def test_a_signature_record_that_is_no_json_is_a_signature_error():
    """Not a StrictJSONError, which the TSO (it catches PackageError and SignatureError)
    would not turn into a refusal."""
    parts = zip_members(package_to_bytes(_package(), KEY))
    bad = rezip(parts | {SIGNATURE: b"{"}, b"flexcosim-package-bytes v1")
    with pytest.raises(SignatureError, match=r"lv-7/SIGNATURE.json: not valid JSON"):
        package_from_bytes(bad, trusted=[KEY.public_key()], allow_full=True, source="lv-7")


def test_package_files_are_the_bytes_save_package_writes(tmp_path):
    pkg = _package()
    files = package_files(pkg, signing_key=KEY)
    folder = save_package(pkg, tmp_path / "p", signing_key=KEY)
    assert sorted(files) == sorted(p.name for p in folder.iterdir())
    for name in (ARRAYS, SIGNATURE):
        assert (folder / name).read_bytes() == files[name]
    # the manifests differ at most in the creation time (seconds)
    a, b = json.loads(files[MANIFEST]), json.loads((folder / MANIFEST).read_bytes())
    assert {k: v for k, v in a.items() if k not in ("created_utc", "package_sha256")} \
        == {k: v for k, v in b.items() if k not in ("created_utc", "package_sha256")}
    assert set(package_files(pkg)) == {MANIFEST, ARRAYS}


def test_finite_json_decides_like_the_walk():
    """The JSON encoder's fast check and the Python walk agree, also where the encoder
    cannot decide (a key JSON cannot hold, an object it does not know)."""
    from flexcore.exchange.signing import _finite_walk, finite_json

    nan, inf = float("nan"), float("inf")
    cases = [{"a": [1.0, 2]}, {"a": [1.0, nan]}, (1.0, -inf), {(1, 2): nan}, {(1, 2): 1.0},
             {"a": object(), "b": 1.0}, {"a": {"b": [inf]}}]
    assert [finite_json(c) for c in cases] == [_finite_walk(c) for c in cases] == \
        [True, False, False, False, True, True, False]
