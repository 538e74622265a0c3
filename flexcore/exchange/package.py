"""The sensitivity package: the only thing the DSO publishes to the TSO.

It holds numbers and opaque keys, never topology. This module imports neither pandapower
nor mosaik, so the TSO side can read and validate packages without the grid code.

File format ``flexcosim-sensitivity-package`` (a directory), versions 1 (the full linear
model, research only: read with ``allow_full=True``) and 2 (the hardened package of
:mod:`flexcore.exchange.hardened`, the default):

``manifest.json``
    strict JSON (duplicate keys, NaN, Infinity refused; no bool where a number is due; no
    unknown field). Both versions: ``format``, ``version``, ``created_utc``, ``shapes``
    (``{array: [dims]}``, must equal what the other fields give), ``arrays_sha256``
    (SHA-256 of ``arrays.npz``) and ``package_sha256``: SHA-256 of the canonical JSON
    (:func:`flexcore.exchange.signing.canonical_json`) of the manifest without this field,
    so it covers the manifest and, through ``arrays_sha256``, the arrays. Version 1 adds
    ``columns`` (the bid ids), ``vm_rows`` and ``loading_rows`` (opaque row keys),
    ``points`` (``label``, ``activation_fraction`` or ``null``), ``limits`` (``vm_min_pu``,
    ``vm_max_pu``, ``loading_min_percent``, ``loading_max_percent``) and ``screening``;
    version 2 adds ``content`` (``HardenedPackage.manifest_fields()``).
``SIGNATURE.json`` (optional)
    an Ed25519 signature record over ``package_sha256`` (purpose
    ``"flexcosim-sensitivity-package"``, :mod:`flexcore.exchange.signing`).
``arrays.npz``
    plain (non-pickled) float64 arrays, m = points, n = columns, v = vm rows,
    l = loading rows:

    ================== ========= ==============================================
    name               shape     meaning
    ================== ========= ==============================================
    ``p_flex_mw``      (m, n)    activated flexibility of each bid at point i
    ``vm_pu``          (m, v)    voltage magnitudes at point i (AC power flow)
    ``loading_percent````(m, l)`` signed loadings at point i (sign = direction of
                                 active power, + from the from/hv side)
    ``vtdf``           (m, v, n) dV/dP at point i, p.u. per MW
    ``ltdf``           (m, l, n) dL/dP at point i, percent per MW
    ================== ========= ==============================================

Version 2 arrays: ``HardenedPackage.arrays()`` (``p_flex_mw``, ``a_<i>``, ``rhs_<i>``, or
``lower_mw``/``upper_mw``). Every array is little-endian float64; the loader reads the
``.npy`` headers inside the zip and checks dtype, shape and a size cap (:data:`MAX_BYTES`)
before it reads any array.

The fixed injections ``P_fix`` are not published: every formula of the clearing uses
``P_i - P_j = P_flex,i - P_flex,j``, so they cancel out and stay private.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import weakref
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError
from flexcore.exchange.hardened import HardenedPackage, check_undeliverable
from flexcore.exchange.limits import BoolArray, FloatArray, Limits, LimitsError
from flexcore.exchange.points import PackageError, PointInfo
from flexcore.exchange.signing import (
    StrictJSONError,
    TrustSpec,
    canonical_json,
    check_signature_bytes,
    finite_json,
    loads_strict,
    record_bytes,
    sha256_hex,
    sign_digest,
)

FORMAT = "flexcosim-sensitivity-package"
VERSION = 1
ARRAY_NAMES = ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf")


#: buffers with room for more points (:func:`point_buffer`): id -> points in use
_IN_USE: dict[int, int] = {}


def point_buffer(points: int, shape: tuple[int, ...], *, spare: int) -> FloatArray:
    """An uninitialised ``(points, *shape)`` array (to be filled) that is the view of a
    buffer with room for ``spare`` more points: :meth:`SensitivityPackage.with_point`
    then writes a new point into the room instead of copying every point (refinement
    rounds), as long as the package it extends is the buffer's latest (a view that
    exists is never written)."""
    buf = np.empty((points + max(spare, 0),) + tuple(shape))
    if spare > 0:
        _IN_USE[id(buf)] = points
        weakref.finalize(buf, _IN_USE.pop, id(buf), None)
    view: FloatArray = buf[:points]
    return view


def _append_point(old: FloatArray, point: FloatArray) -> FloatArray:
    """``old`` with ``point`` appended along the first axis: in place in the room of
    :func:`point_buffer` when ``old`` is its buffer's latest prefix, else a copy."""
    base = old.base
    m = old.shape[0]
    if (isinstance(base, np.ndarray) and _IN_USE.get(id(base)) == m and base.shape[0] > m
            and base.shape[1:] == old.shape[1:] and old.flags.c_contiguous
            and old.ctypes.data == base.ctypes.data and base.dtype == old.dtype):
        base[m] = point
        _IN_USE[id(base)] = m + 1
        out: FloatArray = base[:m + 1]
        return out
    return np.concatenate([old, point[None]], axis=0)


def _check_finite(name: str, arr: FloatArray) -> None:
    """PackageError naming the first non-finite entry of ``arr``. One pass without a
    temporary: a finite sum means every entry is finite (a NaN or an infinity makes the
    sum NaN or infinite); only a non-finite sum (or an overflow) looks entry by entry."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if np.isfinite(total):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise PackageError(f"array '{name}' holds a non-finite value at index {where}")


@dataclass(frozen=True)
class SensitivityPackage:
    """m operating points; arrays as documented in the module docstring."""

    columns: tuple[str, ...]
    vm_rows: tuple[str, ...]
    loading_rows: tuple[str, ...]
    points: tuple[PointInfo, ...]
    p_flex_mw: FloatArray
    vm_pu: FloatArray
    loading_percent: FloatArray
    vtdf: FloatArray
    ltdf: FloatArray
    limits: Limits = field(default_factory=Limits)
    screening: dict[str, Any] | None = None
    #: columns the DSO cannot deliver (bids on buses cut off from every source, an island):
    #: the clearing fixes their activation to 0 (manifest field ``undeliverable``, optional)
    undeliverable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ARRAY_NAMES:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float))
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "undeliverable",
                           check_undeliverable(self.undeliverable, self.columns))
        object.__setattr__(self, "vm_rows", tuple(str(c) for c in self.vm_rows))
        object.__setattr__(self, "loading_rows", tuple(str(c) for c in self.loading_rows))
        object.__setattr__(self, "points", tuple(self.points))
        self.validate()

    # ----------------------------------------------------------------- shape
    @property
    def m(self) -> int:
        return len(self.points)

    @property
    def n(self) -> int:
        return len(self.columns)

    def validate(self) -> None:
        """Shapes, finiteness, key uniqueness; raises PackageError naming the culprit."""
        m, n, v, l = len(self.points), len(self.columns), len(self.vm_rows), len(self.loading_rows)
        if m < 1:
            raise PackageError("package has no operating point")
        expected = {
            "p_flex_mw": (m, n),
            "vm_pu": (m, v),
            "loading_percent": (m, l),
            "vtdf": (m, v, n),
            "ltdf": (m, l, n),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise PackageError(
                    f"array '{name}' has shape {arr.shape}, expected {shape} "
                    f"(m={m} points, n={n} columns, v={v} vm rows, l={l} loading rows)"
                )
            _check_finite(name, arr)
        for label, keys in (("columns", self.columns), ("vm_rows", self.vm_rows),
                            ("loading_rows", self.loading_rows)):
            if len(set(keys)) != len(keys):
                dup = sorted({k for k in keys if keys.count(k) > 1})
                raise PackageError(f"duplicate key(s) in '{label}': {dup[:5]}")
        if set(self.vm_rows) & set(self.loading_rows):
            raise PackageError("a key is used both as a voltage row and as a loading row")

    # ------------------------------------------------------------- transforms
    def with_point(self, label: str, *, p_flex_mw: npt.ArrayLike, vm_pu: npt.ArrayLike,
                   loading_percent: npt.ArrayLike, vtdf: npt.ArrayLike, ltdf: npt.ArrayLike,
                   activation_fraction: float | None = None) -> SensitivityPackage:
        """A new package with one more operating point (refinement rounds). Only the new
        point's arrays are checked (this package was checked when it was made)."""
        v, l, n = len(self.vm_rows), len(self.loading_rows), self.n
        new: dict[str, FloatArray] = {}
        for name, value, shape in (("p_flex_mw", p_flex_mw, (n,)), ("vm_pu", vm_pu, (v,)),
                                   ("loading_percent", loading_percent, (l,)),
                                   ("vtdf", vtdf, (v, n)), ("ltdf", ltdf, (l, n))):
            arr = np.asarray(value, dtype=float)
            if arr.shape != shape:
                raise PackageError(f"new point {label!r}: array '{name}' has shape "
                                   f"{arr.shape}, expected {shape}")
            _check_finite(name, arr)
            new[name] = _append_point(getattr(self, name), arr)
        return self._derived(points=self.points + (PointInfo(label, activation_fraction),),
                             **new)

    def with_limits(self, limits: Limits) -> SensitivityPackage:
        """The same package with other limits (arrays shared, not copied or re-checked)."""
        if not isinstance(limits, Limits):
            raise PackageError(f"limits must be a Limits, got {type(limits).__name__}")
        return self._derived(limits=limits)

    def select_rows(self, vm_keep: npt.ArrayLike, loading_keep: npt.ArrayLike,
                    screening: dict[str, Any] | None = None) -> SensitivityPackage:
        vm_keep = np.asarray(vm_keep, bool)
        loading_keep = np.asarray(loading_keep, bool)
        if vm_keep.shape != (len(self.vm_rows),) or \
                loading_keep.shape != (len(self.loading_rows),):
            raise PackageError(f"select_rows: masks of shape {vm_keep.shape} / "
                               f"{loading_keep.shape}, the package has "
                               f"{len(self.vm_rows)} vm / {len(self.loading_rows)} loading rows")
        vi, li = np.flatnonzero(vm_keep), np.flatnonzero(loading_keep)
        vm_rows, ld_rows = self.vm_rows, self.loading_rows
        return self._derived(
            vm_rows=tuple(vm_rows[k] for k in vi.tolist()),
            loading_rows=tuple(ld_rows[k] for k in li.tolist()),
            vm_pu=self.vm_pu[:, vi],
            loading_percent=self.loading_percent[:, li],
            vtdf=self.vtdf[:, vi, :],
            ltdf=self.ltdf[:, li, :],
            screening=screening if screening is not None else self.screening,
        )

    def _derived(self, **changes: Any) -> SensitivityPackage:
        """A copy with ``changes`` applied, without :meth:`__post_init__`: for transforms of
        this (checked) package whose new fields are checked by the caller or follow from
        checked ones (a subset of rows, one more checked point, other limits)."""
        out = object.__new__(SensitivityPackage)
        for f in fields(self):
            object.__setattr__(out, f.name, changes.pop(f.name, getattr(self, f.name)))
        if changes:
            raise TypeError(f"unknown package field(s) {sorted(changes)}")
        return out

    def predict(self, point: int, activation_mw: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """The linear estimate at point ``point`` for an activation (column order):
        ``(V_i + VTDF_i dP, L_i + LTDF_i dP)`` with ``dP = activation - P_flex,i``. The one
        prediction function: the clearing, the refinement decision and the evaluation all
        call it."""
        x = np.asarray(activation_mw, float)
        if x.shape != (self.n,):
            raise PackageError(f"activation has shape {x.shape}, the package has {self.n} "
                               "columns")
        dp = x - self.p_flex_mw[point]
        return (self.vm_pu[point] + self.vtdf[point] @ dp,
                self.loading_percent[point] + self.ltdf[point] @ dp)

    def nbytes(self) -> int:
        return int(sum(getattr(self, a).nbytes for a in ARRAY_NAMES))


# --------------------------------------------------------------------------- screening
@dataclass(frozen=True)
class ScreeningReport:
    vm_rows_total: int
    vm_rows_kept: int
    loading_rows_total: int
    loading_rows_kept: int
    margin_vm_pu: float
    margin_loading_percent: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def screen(package: SensitivityPackage, *, lower_mw: npt.ArrayLike, upper_mw: npt.ArrayLike,
           margin_vm_pu: float = 0.005, margin_loading_percent: float = 5.0
           ) -> tuple[SensitivityPackage, ScreeningReport]:
    """Drop rows that cannot reach a limit for any activation within the bids' bounds.

    For every point i and row r the reachable range is bounded by
    ``x_i,r +- sum_j |S_i,rj| * max(|P_UB,j - P_flex,i,j|, |P_LB,j - P_flex,i,j|)``; a row
    is kept if, at any point, that range widened by the margin touches a limit. A margin
    covers the linearisation error (the bound itself is exact for the linear model).
    """
    vm_keep, ld_keep = screen_masks(
        package.p_flex_mw, package.vm_pu, package.loading_percent, list(package.vtdf),
        list(package.ltdf), package.limits, lower_mw=lower_mw, upper_mw=upper_mw,
        margin_vm_pu=margin_vm_pu, margin_loading_percent=margin_loading_percent)
    report = ScreeningReport(
        vm_rows_total=len(package.vm_rows), vm_rows_kept=int(vm_keep.sum()),
        loading_rows_total=len(package.loading_rows), loading_rows_kept=int(ld_keep.sum()),
        margin_vm_pu=margin_vm_pu, margin_loading_percent=margin_loading_percent,
    )
    return package.select_rows(vm_keep, ld_keep, screening=report.as_dict()), report


def screen_masks(p_flex_mw: FloatArray, vm_pu: FloatArray, loading_percent: FloatArray,
                 vtdf: Sequence[FloatArray], ltdf: Sequence[FloatArray], limits: Limits, *,
                 lower_mw: npt.ArrayLike, upper_mw: npt.ArrayLike, margin_vm_pu: float,
                 margin_loading_percent: float,
                 bid_column: npt.NDArray[np.intp] | None = None
                 ) -> tuple[BoolArray, BoolArray]:
    """The rows :func:`screen` keeps, ``(vm_keep, loading_keep)``, from the arrays of a
    package (``vtdf``/``ltdf``: one ``(rows, n)`` matrix per point, e.g. the operating
    points' own, so that the DSO stacks only the kept rows). ``bid_column``: the matrices
    have one column per group of bids with equal columns (bids on one bus) and column
    ``j`` of the package is their column ``bid_column[j]``; the reach of a group is the sum
    of its bids' (the same bound, summed in another order)."""
    lo = np.asarray(lower_mw, float)
    hi = np.asarray(upper_mw, float)
    reach = np.maximum(np.abs(hi[None, :] - p_flex_mw),
                       np.abs(lo[None, :] - p_flex_mw))  # (m, n)
    if bid_column is not None:
        k = np.shape(vtdf[0])[1] if len(vtdf) else 0
        reach = np.stack([np.bincount(bid_column, weights=r, minlength=k) for r in reach]) \
            if len(reach) else np.zeros((0, k))
    lim = limits
    dv = _abs_times(vtdf, reach)
    dl = _abs_times(ltdf, reach)
    vm_keep = ((vm_pu - dv - margin_vm_pu <= lim.vm_min_pu)
               | (vm_pu + dv + margin_vm_pu >= lim.vm_max_pu)).any(axis=0)
    ld_keep = ((loading_percent - dl - margin_loading_percent <= lim.loading_min_percent)
               | (loading_percent + dl + margin_loading_percent
                  >= lim.loading_max_percent)).any(axis=0)
    return np.asarray(vm_keep, dtype=bool), np.asarray(ld_keep, dtype=bool)


def _abs_times(mats: Sequence[FloatArray], reach: FloatArray) -> FloatArray:
    """``|S_i| @ reach_i`` per point (the values of ``einsum("mvn,mn->mv", |S|, reach)``,
    one point at a time through one scratch buffer)."""
    out: FloatArray = np.empty((len(mats), np.shape(mats[0])[0] if len(mats) else 0))
    buf: FloatArray | None = None
    for i, s in enumerate(mats):
        s = np.asarray(s, dtype=float)
        if buf is None or buf.shape != s.shape:
            buf = np.empty(s.shape)
        out[i] = np.einsum("vn,n->v", np.abs(s, out=buf), reach[i])
    return out


# --------------------------------------------------------------------------- file I/O
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
SIGNATURE = "SIGNATURE.json"
#: default cap on the arrays of one package (declared sizes, checked before reading)
MAX_BYTES = 512 * 2**20
MAX_MANIFEST_BYTES = 64 * 2**20
_F8 = np.dtype("<f8")
_V1_KEYS = {"format", "version", "created_utc", "columns", "vm_rows", "loading_rows", "points",
            "limits", "screening", "shapes", "arrays_sha256", "package_sha256"}
_V2_KEYS = {"format", "version", "created_utc", "content", "shapes", "arrays_sha256",
            "package_sha256"}
#: optional manifest fields (absent: none); a reader older than the field refuses them
_OPTIONAL_KEYS = {"package_sha256", "undeliverable", "request_mw"}
_V1_KEYS |= {"undeliverable"}
_V2_KEYS |= {"request_mw"}  # format 2: rows published for this request only


#: a package of either version: format 1 (the full linear model) or format 2 (hardened)
AnyPackage: TypeAlias = "SensitivityPackage | HardenedPackage"


def package_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the manifest without ``package_sha256``; the
    manifest holds ``arrays_sha256``, so the digest covers manifest and arrays."""
    return sha256_hex(canonical_json({k: v for k, v in manifest.items()
                                      if k != "package_sha256"}))


def package_files(package: AnyPackage, *,
                  signing_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None
                  ) -> dict[str, bytes]:
    """The files of a package folder in memory, ``{file name: bytes}``: ``manifest.json``,
    ``arrays.npz`` and, with a key, ``SIGNATURE.json`` (the bytes :func:`save_package`
    writes); a format-1 :class:`SensitivityPackage` as version 1, a format-2 package as
    version 2."""
    if isinstance(package, SensitivityPackage):
        arrays = {name: getattr(package, name) for name in ARRAY_NAMES}
        body: dict[str, Any] = {
            "version": 1,
            "columns": list(package.columns),
            "vm_rows": list(package.vm_rows),
            "loading_rows": list(package.loading_rows),
            "points": [{"label": p.label, "activation_fraction": p.activation_fraction}
                       for p in package.points],
            "limits": package.limits.as_dict(),
            "screening": package.screening,
        }
        if package.undeliverable:  # only then: island-free packages are as before
            body["undeliverable"] = list(package.undeliverable)
    else:
        arrays = dict(package.arrays())
        body = {"version": 2, "content": package.manifest_fields()}
        if package.request_mw is not None:  # only then: other packages are as before
            body["request_mw"] = package.request_mw
    arrays = {k: np.ascontiguousarray(v, dtype=_F8) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    manifest = {"format": FORMAT,
                "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                **body,
                "shapes": {name: list(a.shape) for name, a in arrays.items()},
                "arrays_sha256": sha256_hex(data)}
    if not finite_json(manifest):
        raise PackageError("the package's manifest fields hold a non-finite number")
    manifest["package_sha256"] = package_digest(manifest)
    files = {MANIFEST: json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8"),
             ARRAYS: data}
    if signing_key is not None:
        files[SIGNATURE] = record_bytes(sign_digest(manifest["package_sha256"], signing_key,
                                                    purpose=FORMAT))
    return files


def save_package(package: AnyPackage, directory: str | Path, *,
                 signing_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None
                 ) -> Path:
    """Write ``manifest.json`` + ``arrays.npz`` (+ ``SIGNATURE.json`` with a key) into
    ``directory`` (created); a format-1 :class:`SensitivityPackage` as version 1, a
    format-2 package as version 2."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = package_files(package, signing_key=signing_key)
    for name in (ARRAYS, MANIFEST, SIGNATURE):
        if name in files:
            (directory / name).write_bytes(files[name])
    sig = directory / SIGNATURE
    if signing_key is None and sig.exists():
        sig.unlink()  # a stale signature of an earlier package in this folder
    return directory


# ---------------------------------------------------------------- strict manifest schema
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_list(src: str, key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PackageError(f"{src}: field '{key}' must be a list of strings")
    return tuple(v)


def _points(src: str, v: Any) -> tuple[PointInfo, ...]:
    if not isinstance(v, list):
        raise PackageError(f"{src}: field 'points' must be a list")
    out = []
    for i, p in enumerate(v):
        if not isinstance(p, dict) or set(p) != {"label", "activation_fraction"}:
            raise PackageError(f"{src}: points[{i}] must be an object with exactly 'label' "
                               "and 'activation_fraction'")
        a = p["activation_fraction"]
        if not isinstance(p["label"], str) or not (a is None or _is_num(a)):
            raise PackageError(f"{src}: points[{i}]: 'label' must be a string and "
                               f"'activation_fraction' a finite number or null, got {p!r}")
        out.append(PointInfo(p["label"], None if a is None else float(a)))
    return tuple(out)


def _limits(src: str, v: Any) -> Limits:
    names = set(Limits().as_dict())
    if not isinstance(v, dict) or set(v) != names:
        raise PackageError(f"{src}: field 'limits' must be an object with exactly "
                           f"{sorted(names)}")
    for k, x in v.items():
        if not _is_num(x):
            raise PackageError(f"{src}: limits.{k} must be a finite number, got {x!r}")
    try:
        return Limits.from_dict(v, where="'limits'")
    except LimitsError as exc:
        raise PackageError(f"{src}: {exc}") from None


def _shapes(src: str, v: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(v, dict):
        raise PackageError(f"{src}: field 'shapes' must be an object")
    out = {}
    for k, s in v.items():
        if not isinstance(s, list) or not all(_is_int(d) and d >= 0 for d in s):
            raise PackageError(f"{src}: shapes.{k} must be a list of integers >= 0, got {s!r}")
        out[k] = tuple(s)
    return out


def _v1_expected(m: dict[str, Any], src: str) -> dict[str, tuple[int, ...]]:
    mm, n = len(m["points"]), len(m["columns"])
    v, l = len(m["vm_rows"]), len(m["loading_rows"])
    return {"p_flex_mw": (mm, n), "vm_pu": (mm, v), "loading_percent": (mm, l),
            "vtdf": (mm, v, n), "ltdf": (mm, l, n)}


class _Files:
    """The files of a package, in a folder or in memory: ``where`` names the package in
    errors and ``path(name)`` its file ``name`` (for a folder, the file's path)."""

    def __init__(self, where: str, folder: Path | None = None,
                 parts: dict[str, bytes] | None = None) -> None:
        self.where, self.folder, self.parts = where, folder, parts

    def path(self, name: str) -> str:
        return str(self.folder / name) if self.folder is not None else f"{self.where}/{name}"

    def size(self, name: str) -> int | None:
        """The file's size in bytes, None when it does not exist."""
        if self.folder is None:
            blob = (self.parts or {}).get(name)
            return None if blob is None else len(blob)
        p = self.folder / name
        return p.stat().st_size if p.is_file() else None

    def read(self, name: str) -> bytes:
        if self.folder is None:
            return (self.parts or {})[name]
        return (self.folder / name).read_bytes()


def _read_manifest(files: _Files) -> dict[str, Any]:
    mpath = files.path(MANIFEST)
    size = files.size(MANIFEST) or 0
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{mpath}: {size} bytes, above the cap of {MAX_MANIFEST_BYTES}")
    try:
        manifest = loads_strict(files.read(MANIFEST), source=mpath)
    except StrictJSONError as exc:
        raise PackageError(str(exc)) from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{mpath}: top level must be a JSON object")
    return manifest


def _read_npz(data: bytes, declared: dict[str, tuple[int, ...]], apath: str,
              max_bytes: int) -> dict[str, FloatArray]:
    """The arrays of the ``.npz`` ``data``. First every ``.npy`` header, before any array is
    read: exactly the declared names, dtype ``<f8``, the declared shapes, data sizes
    matching, total under the cap. Then each member is read once (its CRC checked) and its
    data after the header taken as ``<f8`` of the declared shape (what
    ``np.lib.format.read_array`` gives, without parsing the header again)."""
    layout: dict[str, tuple[int, bool]] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise PackageError(f"{apath}: not a readable .npz ({exc})") from None
    with zf:
        try:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            want = sorted(f"{k}.npy" for k in declared)
            if sorted(names) != want:
                raise PackageError(f"{apath}: holds members {sorted(names)[:8]}, the manifest "
                                   f"declares {want}")
            total = 0
            for info in infos:
                name = info.filename[:-4]
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise PackageError(f"{apath}: array '{name}' has .npy version "
                                           f"{version}, expected 1.0 or 2.0")
                    header_len = fh.tell()
                if dtype != _F8:
                    raise PackageError(f"{apath}: array '{name}' has dtype {dtype.str!r}, "
                                       "only float64 ('<f8') is allowed")
                nbytes = 8 * math.prod(shape)
                total += nbytes
                if total > max_bytes:
                    raise PackageError(f"{apath}: array '{name}' declares shape {shape} "
                                       f"({nbytes} bytes): the arrays exceed the cap of "
                                       f"{max_bytes} bytes")
                if tuple(shape) != declared[name]:
                    raise PackageError(f"{apath}: array '{name}' has shape {tuple(shape)}, the "
                                       f"manifest declares {declared[name]}")
                if info.file_size - header_len != nbytes:
                    raise PackageError(f"{apath}: array '{name}' holds "
                                       f"{info.file_size - header_len} data bytes, its header "
                                       f"declares {nbytes}")
                layout[name] = (header_len, bool(fortran))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise PackageError(f"{apath}: not a readable .npz ({exc})") from None
        arrays: dict[str, FloatArray] = {}
        try:
            for name, shape in declared.items():
                header_len, fortran = layout[name]
                flat = np.frombuffer(zf.read(f"{name}.npy"), dtype=_F8, offset=header_len)
                if flat.size != math.prod(shape):
                    raise ValueError(f"array '{name}': {flat.size} values, expected "
                                     f"{math.prod(shape)}")
                arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
                arrays[name] = np.array(arr, order="C")   # writable, own memory
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise PackageError(f"{apath}: cannot read arrays ({exc})") from None
    return arrays


def load_package(directory: str | Path, *, allow_full: bool = False,
                 trust: Iterable[TrustSpec] = (), require_signature: bool = False,
                 max_bytes: int = MAX_BYTES) -> AnyPackage:
    """Read and check a package folder; every problem raises a :class:`PackageError` (or a
    :class:`~flexcore.exchange.signing.SignatureError`) naming the file and field.

    Order: manifest (size cap, strict JSON, schema, declared shapes and the size cap),
    package digest (manifest + arrays), signature (``SIGNATURE.json``; with ``trust`` it
    must be by one of those keys; ``trust`` or ``require_signature`` make it mandatory),
    ``.npy`` headers (dtype ``<f8``, shapes), and only then the arrays. Version 1 (the full
    model) is refused unless ``allow_full``; a version-1 folder written before digests
    existed (no ``package_sha256``) is read only with ``allow_full`` and without a signature
    requirement (its arrays' SHA-256 is still checked).
    """
    directory = Path(directory)
    return _load(_Files(str(directory), folder=directory), allow_full=allow_full,
                 trust=trust, require_signature=require_signature, max_bytes=max_bytes)


def load_package_files(parts: dict[str, bytes], *, source: str, allow_full: bool = False,
                       trust: Iterable[TrustSpec] = (), require_signature: bool = False,
                       max_bytes: int = MAX_BYTES) -> AnyPackage:
    """:func:`load_package` of a package folder's files held in memory (``{file name:
    bytes}``, e.g. the members of a ``flexcosim-package-bytes`` archive): the same checks
    in the same order, with the same errors, naming ``source`` where they name the folder
    (``<source>/manifest.json`` for its manifest)."""
    return _load(_Files(source, parts=dict(parts)), allow_full=allow_full, trust=trust,
                 require_signature=require_signature, max_bytes=max_bytes)


def _load(files: _Files, *, allow_full: bool, trust: Iterable[TrustSpec],
          require_signature: bool, max_bytes: int) -> AnyPackage:
    trust = list(trust)
    directory = files.where
    for name in (MANIFEST, ARRAYS):
        if files.size(name) is None:
            raise PackageError(f"package file missing: {files.path(name)}")
    src, apath = files.path(MANIFEST), files.path(ARRAYS)
    manifest = _read_manifest(files)
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{src}: 'format' is not {FORMAT!r}")
    version = manifest.get("version")
    if not _is_int(version) or version not in (1, 2):
        raise PackageError(f"{src}: unsupported package version {version!r} (this reader "
                           "knows versions 1 and 2)")
    if version == 1 and not allow_full:
        raise PackageError(f"{src}: version 1 is the DSO's full linear model; refused "
                           "(research only: --allow-full-package / allow_full=True)")
    keys = _V1_KEYS if version == 1 else _V2_KEYS
    legacy = version == 1 and "package_sha256" not in manifest
    required = keys - _OPTIONAL_KEYS if legacy else keys - {"undeliverable", "request_mw"}
    missing = sorted(required - set(manifest))
    unknown = sorted(set(manifest) - keys)
    if missing or unknown:
        raise PackageError(f"{src}: missing field(s) {missing}, unknown field(s) {unknown}")
    for key in ("arrays_sha256", "package_sha256", "created_utc"):
        if key in manifest and not isinstance(manifest[key], str):
            raise PackageError(f"{src}: field '{key}' must be a string")
    declared = _shapes(src, manifest["shapes"])
    if version == 1:
        for key in ("columns", "vm_rows", "loading_rows"):
            _str_list(src, key, manifest[key])
        points = _points(src, manifest["points"])
        limits = _limits(src, manifest["limits"])
        if manifest["screening"] is not None and not isinstance(manifest["screening"], dict):
            raise PackageError(f"{src}: field 'screening' must be an object or null")
        expected = _v1_expected(manifest, src)
    else:
        if not isinstance(manifest["content"], dict):
            raise PackageError(f"{src}: field 'content' must be an object")
        try:
            expected = dict(HardenedPackage.expected_shapes(manifest["content"]))
        except PackageError as exc:
            raise PackageError(f"{src}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PackageError(f"{src}: malformed 'content' ({exc!r})") from None
    if declared != expected:
        raise PackageError(f"{src}: field 'shapes' is {declared}, the manifest's fields give "
                           f"{expected}")
    total = sum(8 * math.prod(s) for s in declared.values())
    if total > max_bytes:
        raise PackageError(f"{src}: the declared arrays need {total} bytes, above the cap of "
                           f"{max_bytes} bytes")
    if legacy:
        if require_signature or trust:
            raise PackageError(f"{src}: an old version-1 folder without 'package_sha256' "
                               "cannot carry a signature")
    else:
        digest = package_digest(manifest)
        if digest != manifest["package_sha256"]:
            raise PackageError(f"{src}: digest mismatch (manifest says "
                               f"{manifest['package_sha256'][:12]}..., content is "
                               f"{digest[:12]}...): the package was modified after publishing")
        check_signature_bytes(files.read(SIGNATURE) if files.size(SIGNATURE) is not None
                              else None, digest, source=files.path(SIGNATURE), purpose=FORMAT,
                              trust=trust, require_signature=require_signature,
                              what=f"package {directory}")
    asize = files.size(ARRAYS) or 0
    if asize > max_bytes + MAX_MANIFEST_BYTES:
        raise PackageError(f"{apath}: {asize} bytes, above the cap of {max_bytes} bytes")
    data = files.read(ARRAYS)
    adigest = sha256_hex(data)
    if adigest != manifest["arrays_sha256"]:
        raise PackageError(
            f"{apath}: checksum mismatch (manifest says {manifest['arrays_sha256'][:12]}..., "
            f"file is {adigest[:12]}...): the arrays were modified after publishing")
    arrays = _read_npz(data, declared, apath, max_bytes)
    try:
        if version == 2:
            pkg = HardenedPackage.from_parts(manifest["content"], arrays)
            if "request_mw" in manifest:
                req = manifest["request_mw"]
                if isinstance(req, bool) or not isinstance(req, (int, float)):
                    raise PackageError(f"field 'request_mw' must be a number, got {req!r}")
                pkg = replace(pkg, request_mw=float(req))
            return pkg
        return SensitivityPackage(
            columns=tuple(manifest["columns"]), vm_rows=tuple(manifest["vm_rows"]),
            loading_rows=tuple(manifest["loading_rows"]), points=points, limits=limits,
            screening=manifest["screening"],
            undeliverable=manifest.get("undeliverable", []), **arrays)
    except PackageError as exc:
        raise PackageError(f"{directory}: {exc}") from None


def load_full_package(directory: str | Path, **options: Any) -> SensitivityPackage:
    """:func:`load_package` of a version-1 folder (the DSO reading its own full package);
    a version-2 folder raises PackageError."""
    pkg = load_package(directory, allow_full=True, **options)
    if not isinstance(pkg, SensitivityPackage):
        raise PackageError(f"{directory}: a version-2 package, the full (version 1) one is "
                           "needed here")
    return pkg


# --------------------------------------------------------------------------- bids
def check_bids(package: AnyPackage, bids: BidTable) -> None:
    """ClearingError naming the bid unless ``bids`` are the bids the package was linearised
    for: the same ids in column order, ``p_flex_mw[i] == a * volume`` (1e-9 relative) at every
    point with an activation fraction a, and every point within the bids' bounds."""
    columns, points, p_flex = tuple(package.columns), package.points, package.p_flex_mw
    if set(bids.ids) != set(columns) or len(bids.ids) != len(columns):
        extra = sorted(set(bids.ids) - set(columns))
        lacking = sorted(set(columns) - set(bids.ids))
        raise ClearingError(f"the bids do not match the package: bid(s) not in the package "
                            f"{extra[:5]}, package column(s) without a bid {lacking[:5]}")
    order = [bids.ids.index(c) for c in columns]
    # undeliverable columns (an island) were linearised with volume 0: the clearing fixes them
    off = np.isin(np.array(columns, dtype=object), list(package.undeliverable))
    vol = np.where(off, 0.0, bids.volume_mw[order])
    lo = np.where(off, 0.0, bids.lower_mw[order])
    hi = np.where(off, 0.0, bids.upper_mw[order])
    for i, pt in enumerate(points):
        p = p_flex[i]
        if pt.activation_fraction is not None:
            want = pt.activation_fraction * vol
            bad = np.flatnonzero(np.abs(p - want) > 1e-9 * np.maximum(np.abs(want), 1e-3))
            if bad.size:
                j = int(bad[0])
                raise ClearingError(
                    f"bid {columns[j]!r}: volume {vol[j]} MW does not match the package "
                    f"(point {pt.label!r} activates {p[j]} MW, not {want[j]} = "
                    f"{pt.activation_fraction} x {vol[j]} MW): the package was linearised "
                    "for other bids")
        tol = 1e-9 * np.maximum(np.abs(vol), 1e-3)
        bad = np.flatnonzero((p < lo - tol) | (p > hi + tol))
        if bad.size:
            j = int(bad[0])
            raise ClearingError(f"bid {columns[j]!r}: point {pt.label!r} activates {p[j]} MW, "
                                f"outside the bid's bounds [{lo[j]}, {hi[j]}] MW")
