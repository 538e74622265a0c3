"""The hardened sensitivity package (package format version 2): only what the clearing needs.

A format-1 package (:class:`~flexcore.exchange.package.SensitivityPackage`) publishes base
values, limits and keyed VTDF/LTDF rows, from which an attacker recovers the feeder tree,
each bid's bus and every building's load (``flexcore.dso.audit``). Format 2 publishes, per
operating point ``i``, the constraints of region ``i`` on the **activation** ``x`` (MW, in
column order) in the normalised form

    ``a · x <= rhs``,   ``rhs`` in {-1, 0, 1}

(``rhs = 1``: the row's linear value at ``x = 0`` is inside its limit and ``a`` is scaled
by the distance to it; ``rhs = -1``: already past the limit; ``rhs = 0``: exactly at it,
``a`` of unit length). Voltage and loading rows, upper and lower sides, are mixed in a
random order without keys; base values, limits, ratings never appear. Only rows that can
bind somewhere in the bid box ∩ the point's Voronoi cell are published
(``flexcore.dso.privacy.harden``), so the feasible set, and the optimum, are those of the
format-1 package. A point whose region is empty on its own is listed in ``excluded`` (the
clearing fixes ``b_i = 0``).

**Rows for one request** (optional manifest field ``request_mw``, the co-simulation's
default): the DSO publishes only rows the clearing of that request needs. It starts with
the rows already at or past their limit and adds, after each clearing, the rows of the
selected region the activation violates in its private model (``flexcore.dso.privacy.
publish_rows``), until a clearing violates none; that clearing is then optimal for the
complete model too (it is optimal for a relaxation and feasible), so the cost equals the
format-1 cost. Such a package is no model of the region for any other request: the
clearing refuses another request (:class:`PackageRequestError`). Packages without the
field are unchanged, and readers older than the field refuse packages that carry it.

The **envelope** variant (``privacy = "envelope"``) publishes no rows at all, only a
per-bid activation range ``lower_mw <= x <= upper_mw`` (``flexcore.market.envelope``).

This module imports neither pandapower nor mosaik and is mypy-strict.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from flexcore.errors import FlexcosimError
from flexcore.exchange.enums import PrivacyLevel
from flexcore.exchange.limits import FloatArray
from flexcore.exchange.points import PackageError, PointInfo

VERSION = 2
RHS_VALUES = (-1.0, 0.0, 1.0)


def _float_array(name: str, value: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    try:
        arr: FloatArray = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PackageError(f"array '{name}' is not numeric ({exc})") from None
    if arr.shape != shape:
        raise PackageError(f"array '{name}' has shape {arr.shape}, expected {shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise PackageError(f"array '{name}' holds a non-finite value at index "
                           f"{np.argwhere(bad)[0].tolist()}")
    return arr


def check_undeliverable(ids: Any, columns: tuple[str, ...]) -> tuple[str, ...]:
    """``ids`` as a tuple of distinct column ids (PackageError naming the culprit)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
        raise PackageError(f"field 'undeliverable' must be a list of column ids, got {ids!r}")
    out = tuple(ids)
    known = set(columns)
    bad = [b for b in out if not isinstance(b, str) or b not in known]
    if bad or len(set(out)) != len(out):
        raise PackageError(f"field 'undeliverable' lists unknown or repeated column id(s) "
                           f"{(bad or list(out))[:5]}")
    return out



class PackageRequestError(PackageError):
    """A package published for one request is cleared for another."""


@dataclass(frozen=True)
class HardenedPackage:
    """Format 2: per point ``i`` the rows ``rows_a[i] @ x <= rows_rhs[i]`` (see module doc)."""

    privacy: PrivacyLevel
    columns: tuple[str, ...]
    points: tuple[PointInfo, ...]
    p_flex_mw: FloatArray
    rows_a: tuple[FloatArray, ...] = ()
    rows_rhs: tuple[FloatArray, ...] = ()
    excluded: tuple[int, ...] = ()
    lower_mw: FloatArray | None = None
    upper_mw: FloatArray | None = None
    screening: dict[str, Any] | None = None
    #: columns the clearing must leave at 0 (bids on an island; optional content field)
    undeliverable: tuple[str, ...] = ()
    #: the request (MW) the rows were published for; None: rows for every request
    request_mw: float | None = None

    def __post_init__(self) -> None:
        try:
            privacy = PrivacyLevel.parse(self.privacy, where="privacy")
        except FlexcosimError as exc:
            raise PackageError(str(exc)) from None
        if privacy == PrivacyLevel.FULL:
            raise PackageError("privacy 'full' is package format 1 (SensitivityPackage), not "
                               "a HardenedPackage")
        object.__setattr__(self, "privacy", privacy)
        object.__setattr__(self, "columns", tuple(map(str, self.columns)))
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "undeliverable",
                           check_undeliverable(self.undeliverable, self.columns))
        req = self.request_mw
        if req is not None:
            if isinstance(req, bool) or not isinstance(req, (int, float)) \
                    or not np.isfinite(req):
                raise PackageError(f"field 'request_mw' must be a finite number or absent, got "
                                   f"{req!r}")
            object.__setattr__(self, "request_mw", float(req))
        m, n = len(self.points), len(self.columns)
        if m < 1:
            raise PackageError("package has no operating point")
        if len(set(self.columns)) != n:
            dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise PackageError(f"duplicate key(s) in 'columns': {dup[:5]}")
        object.__setattr__(self, "p_flex_mw", _float_array("p_flex_mw", self.p_flex_mw, (m, n)))
        envelope = privacy == PrivacyLevel.ENVELOPE
        rows_a, rows_rhs = tuple(self.rows_a), tuple(self.rows_rhs)
        if envelope and not rows_a and not rows_rhs:
            rows_a = tuple(np.zeros((0, n)) for _ in range(m))
            rows_rhs = tuple(np.zeros(0) for _ in range(m))
        if len(rows_a) != m or len(rows_rhs) != m:
            raise PackageError(f"rows_a / rows_rhs need one entry per point ({m}), got "
                               f"{len(rows_a)} / {len(rows_rhs)}")
        a_out: list[FloatArray] = []
        rhs_out: list[FloatArray] = []
        for i, (a, rhs) in enumerate(zip(rows_a, rows_rhs)):
            rhs_arr = np.asarray(rhs, dtype=np.float64)
            if rhs_arr.ndim != 1:
                raise PackageError(f"array 'rhs_{i}' must be one-dimensional, has shape "
                                   f"{rhs_arr.shape}")
            r = rhs_arr.shape[0]
            a_out.append(_float_array(f"a_{i}", a, (r, n)))
            rhs_arr = _float_array(f"rhs_{i}", rhs_arr, (r,))
            bad = ~((rhs_arr == -1.0) | (rhs_arr == 0.0) | (rhs_arr == 1.0))  # RHS_VALUES
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise PackageError(f"array 'rhs_{i}' holds {rhs_arr[k]!r} at index {k}; a "
                                   "right-hand side must be -1, 0 or 1")
            rhs_out.append(rhs_arr)
        if envelope and any(a.shape[0] for a in a_out):
            raise PackageError("an envelope package publishes no rows")
        object.__setattr__(self, "rows_a", tuple(a_out))
        object.__setattr__(self, "rows_rhs", tuple(rhs_out))
        excl = tuple(int(e) for e in self.excluded)
        if len(set(excl)) != len(excl) or any(not 0 <= e < m for e in excl):
            raise PackageError(f"'excluded' must list distinct point indices in [0, {m}), got "
                               f"{list(excl)}")
        object.__setattr__(self, "excluded", tuple(sorted(excl)))
        if envelope:
            if self.lower_mw is None or self.upper_mw is None:
                raise PackageError("an envelope package needs arrays 'lower_mw' and 'upper_mw'")
            lo = _float_array("lower_mw", self.lower_mw, (n,))
            hi = _float_array("upper_mw", self.upper_mw, (n,))
            if np.any(lo > hi):
                k = int(np.flatnonzero(lo > hi)[0])
                raise PackageError(f"envelope of column {self.columns[k]!r}: lower_mw "
                                   f"{lo[k]} > upper_mw {hi[k]}")
            object.__setattr__(self, "lower_mw", lo)
            object.__setattr__(self, "upper_mw", hi)
        elif self.lower_mw is not None or self.upper_mw is not None:
            raise PackageError("'lower_mw' / 'upper_mw' belong to envelope packages only")

    # ----------------------------------------------------------------- shape
    @property
    def m(self) -> int:
        return len(self.points)

    @property
    def n(self) -> int:
        return len(self.columns)

    @property
    def row_counts(self) -> tuple[int, ...]:
        return tuple(int(a.shape[0]) for a in self.rows_a)

    def check_request(self, request_mw: float) -> None:
        """Raise :class:`PackageRequestError` unless the package serves ``request_mw`` (a
        package without ``request_mw`` serves every request)."""
        if self.request_mw is not None and not float(request_mw) == self.request_mw:
            raise PackageRequestError(
                f"package published for request_mw = {self.request_mw!r}, cleared for "
                f"{float(request_mw)!r}: its rows hold for that request only")

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays().values()))

    # ------------------------------------------------------------ file parts
    def manifest_fields(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-able (the loader checks shapes from these)."""
        extra: dict[str, Any] = (
            {"undeliverable": list(self.undeliverable)} if self.undeliverable else {})
        return extra | {
            "privacy": self.privacy.value,
            "columns": list(self.columns),
            "points": [{"label": p.label, "activation_fraction": p.activation_fraction}
                       for p in self.points],
            "rows": list(self.row_counts),
            "excluded": list(self.excluded),
            "screening": self.screening,
        }

    def arrays(self) -> dict[str, FloatArray]:
        """Named arrays: ``p_flex_mw``, ``a_<i>``, ``rhs_<i>`` (and the envelope's bounds)."""
        out: dict[str, FloatArray] = {"p_flex_mw": self.p_flex_mw}
        for i, (a, rhs) in enumerate(zip(self.rows_a, self.rows_rhs)):
            out[f"a_{i}"] = a
            out[f"rhs_{i}"] = rhs
        if self.lower_mw is not None and self.upper_mw is not None:
            out["lower_mw"] = self.lower_mw
            out["upper_mw"] = self.upper_mw
        return out

    @staticmethod
    def expected_shapes(fields: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Array name -> shape, from the manifest fields alone (PackageError if malformed)."""
        try:
            privacy = PrivacyLevel.parse(fields.get("privacy"), where="field 'privacy'")
        except FlexcosimError as exc:
            raise PackageError(str(exc)) from None
        columns, points, rows = fields.get("columns"), fields.get("points"), fields.get("rows")
        for name, value in (("columns", columns), ("points", points), ("rows", rows)):
            if not isinstance(value, list):
                raise PackageError(f"field '{name}' must be a list, got {type(value).__name__}")
        assert isinstance(columns, list) and isinstance(points, list) and isinstance(rows, list)
        m, n = len(points), len(columns)
        if len(rows) != m:
            raise PackageError(f"field 'rows' has {len(rows)} entries, 'points' has {m}")
        shapes: dict[str, tuple[int, ...]] = {"p_flex_mw": (m, n)}
        for i, r in enumerate(rows):
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise PackageError(f"field 'rows[{i}]' must be a row count >= 0, got {r!r}")
            shapes[f"a_{i}"] = (r, n)
            shapes[f"rhs_{i}"] = (r,)
        if privacy == PrivacyLevel.ENVELOPE:
            shapes["lower_mw"] = (n,)
            shapes["upper_mw"] = (n,)
        return shapes

    @classmethod
    def from_parts(cls, fields: dict[str, Any], arrays: Mapping[str, npt.ArrayLike]
                   ) -> HardenedPackage:
        """The package from manifest fields and arrays; PackageError names the culprit."""
        shapes = cls.expected_shapes(fields)
        missing = [k for k in shapes if k not in arrays]
        extra = [k for k in arrays if k not in shapes]
        if missing or extra:
            raise PackageError(f"arrays do not match the manifest: missing {missing[:5]}, "
                               f"unexpected {extra[:5]}")
        arrs = {k: _float_array(k, arrays[k], shape) for k, shape in shapes.items()}
        try:
            points = tuple(PointInfo(str(p["label"]),
                                     None if p.get("activation_fraction") is None
                                     else float(p["activation_fraction"]))
                           for p in fields["points"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PackageError(f"field 'points' is malformed ({exc!r})") from None
        excluded = fields.get("excluded", [])
        if not isinstance(excluded, list) or any(
                isinstance(e, bool) or not isinstance(e, int) for e in excluded):
            raise PackageError(f"field 'excluded' must be a list of point indices, got "
                               f"{excluded!r}")
        screening = fields.get("screening")
        if screening is not None and not isinstance(screening, dict):
            raise PackageError("field 'screening' must be an object or null")
        m = len(points)
        return cls(
            privacy=PrivacyLevel.parse(fields["privacy"]),
            columns=tuple(str(c) for c in fields["columns"]),
            points=points,
            p_flex_mw=arrs["p_flex_mw"],
            rows_a=tuple(arrs[f"a_{i}"] for i in range(m)),
            rows_rhs=tuple(arrs[f"rhs_{i}"] for i in range(m)),
            excluded=tuple(excluded),
            lower_mw=arrs.get("lower_mw"),
            upper_mw=arrs.get("upper_mw"),
            screening=screening,
            undeliverable=fields.get("undeliverable", []),
        )
