"""The sensitivity package: the only thing the DSO publishes to the TSO.

It holds numbers and opaque keys, never topology. This module imports neither pandapower
nor mosaik, so the TSO side can read and validate packages without the grid code.

File format ``flexcosim-sensitivity-package``, version 1 (a directory):

``manifest.json``
    ``format``, ``version``, ``created_utc``, ``columns`` (column keys, one per bid: the
    bid ids), ``vm_rows`` and ``loading_rows`` (opaque row keys), ``points`` (one object
    per operating point: ``label``, ``activation_fraction`` or ``null``), ``limits``
    (``vm_min_pu``, ``vm_max_pu``, ``loading_min_percent``, ``loading_max_percent``),
    ``screening`` (``null`` or what was dropped), ``arrays_sha256`` and ``shapes``.
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

The fixed injections ``P_fix`` are not published: every formula of the clearing uses
``P_i - P_j = P_flex,i - P_flex,j``, so they cancel out and stay private.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flexcore.errors import FlexcosimError
from flexcore.exchange.limits import FloatArray, Limits, LimitsError

FORMAT = "flexcosim-sensitivity-package"
VERSION = 1
ARRAY_NAMES = ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf")


class PackageError(FlexcosimError, ValueError):
    """A sensitivity package is malformed, tampered with, or of an unknown version."""


@dataclass(frozen=True)
class PointInfo:
    label: str
    activation_fraction: float | None = None


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

    def __post_init__(self) -> None:
        for name in ARRAY_NAMES:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float))
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
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
            bad = ~np.isfinite(arr)
            if bad.any():
                where = np.argwhere(bad)[0].tolist()
                raise PackageError(f"array '{name}' holds a non-finite value at index {where}")
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
        """A new package with one more operating point (refinement rounds)."""
        return replace(
            self,
            points=self.points + (PointInfo(label, activation_fraction),),
            p_flex_mw=np.vstack([self.p_flex_mw, np.asarray(p_flex_mw)[None, :]]),
            vm_pu=np.vstack([self.vm_pu, np.asarray(vm_pu)[None, :]]),
            loading_percent=np.vstack([self.loading_percent, np.asarray(loading_percent)[None, :]]),
            vtdf=np.concatenate([self.vtdf, np.asarray(vtdf)[None]], axis=0),
            ltdf=np.concatenate([self.ltdf, np.asarray(ltdf)[None]], axis=0),
        )

    def select_rows(self, vm_keep: npt.ArrayLike, loading_keep: npt.ArrayLike,
                    screening: dict[str, Any] | None = None) -> SensitivityPackage:
        vm_keep = np.asarray(vm_keep, bool)
        loading_keep = np.asarray(loading_keep, bool)
        return replace(
            self,
            vm_rows=tuple(k for k, keep in zip(self.vm_rows, vm_keep) if keep),
            loading_rows=tuple(k for k, keep in zip(self.loading_rows, loading_keep) if keep),
            vm_pu=self.vm_pu[:, vm_keep],
            loading_percent=self.loading_percent[:, loading_keep],
            vtdf=self.vtdf[:, vm_keep, :],
            ltdf=self.ltdf[:, loading_keep, :],
            screening=screening if screening is not None else self.screening,
        )

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
    lo = np.asarray(lower_mw, float)
    hi = np.asarray(upper_mw, float)
    reach = np.maximum(np.abs(hi[None, :] - package.p_flex_mw),
                       np.abs(lo[None, :] - package.p_flex_mw))  # (m, n)
    lim = package.limits
    dv = np.einsum("mvn,mn->mv", np.abs(package.vtdf), reach)
    dl = np.einsum("mln,mn->ml", np.abs(package.ltdf), reach)
    vm_keep = ((package.vm_pu - dv - margin_vm_pu <= lim.vm_min_pu)
               | (package.vm_pu + dv + margin_vm_pu >= lim.vm_max_pu)).any(axis=0)
    ld_keep = ((package.loading_percent - dl - margin_loading_percent <= lim.loading_min_percent)
               | (package.loading_percent + dl + margin_loading_percent
                  >= lim.loading_max_percent)).any(axis=0)
    report = ScreeningReport(
        vm_rows_total=len(package.vm_rows), vm_rows_kept=int(vm_keep.sum()),
        loading_rows_total=len(package.loading_rows), loading_rows_kept=int(ld_keep.sum()),
        margin_vm_pu=margin_vm_pu, margin_loading_percent=margin_loading_percent,
    )
    return package.select_rows(vm_keep, ld_keep, screening=report.as_dict()), report


# --------------------------------------------------------------------------- file I/O
def save_package(package: SensitivityPackage, directory: str | Path) -> Path:
    """Write ``manifest.json`` + ``arrays.npz`` into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{name: getattr(package, name) for name in ARRAY_NAMES})
    data = buf.getvalue()
    (directory / "arrays.npz").write_bytes(data)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "columns": list(package.columns),
        "vm_rows": list(package.vm_rows),
        "loading_rows": list(package.loading_rows),
        "points": [{"label": p.label, "activation_fraction": p.activation_fraction}
                   for p in package.points],
        "limits": package.limits.as_dict(),
        "screening": package.screening,
        "shapes": {name: list(getattr(package, name).shape) for name in ARRAY_NAMES},
        "arrays_sha256": hashlib.sha256(data).hexdigest(),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def load_package(directory: str | Path) -> SensitivityPackage:
    """Read and validate a package; every problem raises PackageError naming it."""
    directory = Path(directory)
    mpath, apath = directory / "manifest.json", directory / "arrays.npz"
    for p in (mpath, apath):
        if not p.is_file():
            raise PackageError(f"package file missing: {p}")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{mpath}: 'format' is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise PackageError(
            f"{mpath}: unsupported package version {manifest.get('version')!r} "
            f"(this reader knows version {VERSION})"
        )
    for key in ("columns", "vm_rows", "loading_rows", "points", "limits", "arrays_sha256"):
        if key not in manifest:
            raise PackageError(f"{mpath}: missing field '{key}'")
    data = apath.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["arrays_sha256"]:
        raise PackageError(
            f"{apath}: checksum mismatch (manifest says {manifest['arrays_sha256'][:12]}..., "
            f"file is {digest[:12]}...): the arrays were modified after publishing"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [a for a in ARRAY_NAMES if a not in npz.files]
            if missing:
                raise PackageError(f"{apath}: missing array(s) {missing}")
            arrays = {a: np.array(npz[a], dtype=float) for a in ARRAY_NAMES}
    except (ValueError, OSError) as exc:
        raise PackageError(f"{apath}: cannot read arrays ({exc})") from None
    try:
        limits = Limits.from_dict(manifest["limits"], where="'limits'")
        points = tuple(PointInfo(str(p["label"]), p.get("activation_fraction"))
                       for p in manifest["points"])
    except LimitsError as exc:
        raise PackageError(f"{mpath}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PackageError(f"{mpath}: malformed 'limits' or 'points' ({exc!r})") from None
    try:
        return SensitivityPackage(
            columns=tuple(manifest["columns"]),
            vm_rows=tuple(manifest["vm_rows"]),
            loading_rows=tuple(manifest["loading_rows"]),
            points=points,
            limits=limits,
            screening=manifest.get("screening"),
            **arrays,
        )
    except PackageError as exc:
        raise PackageError(f"{directory}: {exc}") from None
