"""One clearing over many DSO packages: the LV areas' packages and the MV DSO's package.

Every package ``p`` keeps its own operating points and its own region binaries ``b[p, i]``
(exactly one region per package), so the MILP replaces the ``m^N`` enumeration of one LP
per combination of regions. Variables per LV package: ``dP[p, i, j]`` (bid j at point i,
zero unless ``b[p, i] = 1``), ``b[p, i]`` and, when coupled, ``s[p, i]``: the change of the
area's slack (MV bus) voltage, carried by the selected point only.

Rows, per LV package:

- bid box ``(P_LB - P_flex,i) b_i <= dP_i <= (P_UB - P_flex,i) b_i``; ``|o_i + s_i| <= S_MAX b_i``;
- ``sum_i b_i = 1``; Voronoi ``0.5 |P_flex,i - P_flex,k|^2 b_i + (P_flex,i - P_flex,k) dP_i
  >= 0`` (docs/method.md 14h);
- per point i and voltage/loading row r: ``lb_r b_i <= V_ir b_i + S_ir dP_i + g_ir s_i <=
  ub_r b_i`` (the prediction at point i, vacuous unless i is selected: the convex-hull form,
  whose LP relaxation is much tighter than one row over all points; ``g`` = the row's
  response to the slack voltage, published as the column :data:`SLACK_COLUMN`); rows that
  cannot reach a limit from point i's bid box are left out (exact);

and over the region: ``sum_p sum_j x_pj = request`` (``x_p = sum_i P_flex,i b_i + dP_i``).

The MV DSO's package has one column per LV area (its net injection at the transformer's MV
bus) and its own points and binaries. It is linked by ``injection_a = sum_j x_aj`` (the
activation; the change of the area's losses is left to the AC check and refinement) and
its prediction of the area's slack-bus voltage sets ``sum_i (o_ai b_ai + s_ai) = V_mv,a -
V_mv,a(base)`` (base = the MV point with activation fraction 0, the set point the LV DSO
linearised its first points at; ``o_ai`` = the slack offset of point i, the slack
column's ``P_flex``: a refinement point is computed at the slack voltage the DSO measured).

**Rows violated in the base case** (the package's point with activation fraction 0): the
clearing does not have to repair them but must not make them worse, i.e. the limit of such
a row is widened to its base value (``lb_r := min(lb_r, V_r,base)``, ``ub_r := max(ub_r,
V_r,base)``). Without a zero point the limits are used as they are.

Only format-1 packages (the full linear model) and divisible bids (no ``min_mw``, not
indivisible) are supported here. This module imports neither pandapower nor the grid code.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError
from flexcore.exchange.enums import ClearingStatus
from flexcore.exchange.limits import FloatArray
from flexcore.exchange.package import SensitivityPackage, check_bids
from flexcore.market.direct import INF, LinearProgram, align_bids, solve_highs

#: the reserved column id of an LV package's response to its slack voltage (p.u. per p.u.)
SLACK_COLUMN = "@slack-vm"
#: bound on the slack-voltage change a clearing may assume (p.u.)
S_MAX_PU = 0.1
_TOL = 1e-9


# --------------------------------------------------------------------------- inputs
def with_slack_column(package: SensitivityPackage, slack_vtdf: FloatArray,
                      slack_ltdf: FloatArray, slack_offset_pu: FloatArray | None = None
                      ) -> SensitivityPackage:
    """``package`` plus the column :data:`SLACK_COLUMN`: every row's response to the slack
    voltage (``(m, v)`` and ``(m, l)``, p.u. or % per p.u.); its "activation" at point i is
    the slack voltage the point was computed at, as an offset from the base-case set point
    (``slack_offset_pu``, default 0). What an LV DSO publishes (and signs) for a coupled
    clearing."""
    off = np.zeros(package.m) if slack_offset_pu is None else np.asarray(slack_offset_pu,
                                                                         float)
    return replace(
        package, columns=package.columns + (SLACK_COLUMN,),
        p_flex_mw=np.hstack([package.p_flex_mw, off[:, None]]),
        vtdf=np.concatenate([package.vtdf, np.asarray(slack_vtdf, float)[:, :, None]], axis=2),
        ltdf=np.concatenate([package.ltdf, np.asarray(slack_ltdf, float)[:, :, None]], axis=2))


def split_slack_column(package: SensitivityPackage
                       ) -> tuple[SensitivityPackage, FloatArray | None, FloatArray | None,
                                  FloatArray | None]:
    """The bid columns of ``package``, its slack response ``(m, v)``, ``(m, l)`` and the
    points' slack offsets ``(m,)`` (None without the column)."""
    if SLACK_COLUMN not in package.columns:
        return package, None, None, None
    k = package.columns.index(SLACK_COLUMN)
    keep = [c for c in range(package.n) if c != k]
    bare = replace(package, columns=tuple(package.columns[c] for c in keep),
                   p_flex_mw=package.p_flex_mw[:, keep], vtdf=package.vtdf[:, :, keep],
                   ltdf=package.ltdf[:, :, keep])
    if np.any(np.abs(package.p_flex_mw[:, k]) > S_MAX_PU):
        raise ClearingError(f"column {SLACK_COLUMN!r}: a point's slack offset exceeds "
                            f"{S_MAX_PU} p.u.")
    return (bare, package.vtdf[:, :, k].copy(), package.ltdf[:, :, k].copy(),
            package.p_flex_mw[:, k].copy())


@dataclass(frozen=True)
class AreaPackage:
    """One LV DSO's contribution: its package (bid columns, optionally the slack column),
    its bids, and where it hangs in the MV package (``None``: not coupled)."""

    name: str
    package: SensitivityPackage
    bids: BidTable
    mv_column: str | None = None       # the MV package column of this area's injection
    mv_slack_row: str | None = None    # the MV package voltage row of this area's slack


@dataclass
class RegionClearing:
    """The result of :func:`clear_region`; per-area dicts keyed by area name."""

    status: ClearingStatus
    message: str
    request_mw: float
    cost_eur_per_h: float = float("nan")
    activation_mw: dict[str, FloatArray] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    mv_point: int | None = None
    slack_dv_pu: dict[str, float] = field(default_factory=dict)
    predicted_vm_pu: dict[str, FloatArray] = field(default_factory=dict)
    predicted_loading_percent: dict[str, FloatArray] = field(default_factory=dict)
    mv_predicted_vm_pu: FloatArray | None = None
    mv_predicted_loading_percent: FloatArray | None = None
    columns: int = 0
    rows: int = 0
    binaries: int = 0
    build_time_s: float = 0.0
    solve_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status.has_solution

    def cost_of(self, name: str, bids: BidTable) -> float:
        """``sum_j c_j |x_j|`` of one area."""
        x = self.activation_mw[name]
        return float(np.abs(x) @ bids.price_eur_per_mwh)


# --------------------------------------------------------------------------- model
@dataclass
class _Block:
    """One package's data in the MILP (LV or MV)."""

    name: str
    pkg: SensitivityPackage
    lo: FloatArray             # (n,) lower bounds of the activation
    hi: FloatArray
    weight: FloatArray         # (n,) cost per MW
    g_v: FloatArray | None     # (m, v) slack response or None
    g_l: FloatArray | None
    g_off: FloatArray | None = None   # (m,) the points' slack offsets
    dv_lo: float = -S_MAX_PU   # range of the slack-voltage change (from the MV package)
    dv_hi: float = S_MAX_PU
    col0: int = 0              # first column: dP (m*n) | b (m) | s (m, coupled only)

    @property
    def m(self) -> int:
        return self.pkg.m

    @property
    def n(self) -> int:
        return self.pkg.n

    @property
    def coupled(self) -> bool:
        return self.g_v is not None

    def dp(self, i: int) -> np.ndarray:
        return self.col0 + i * self.n + np.arange(self.n)

    def b(self, i: int) -> int:
        return self.col0 + self.m * self.n + i

    def s(self, i: int) -> int:
        return self.col0 + self.m * self.n + self.m + i

    def s_range(self, i: int) -> tuple[float, float]:
        """Bounds of ``s_i`` when point i is selected."""
        off = float(self.g_off[i]) if self.g_off is not None else 0.0
        return min(self.dv_lo - off, 0.0), max(self.dv_hi - off, 0.0)

    @property
    def width(self) -> int:
        return self.m * self.n + self.m + (self.m if self.coupled else 0)


class _Rows:
    """Sparse rows collected as triplets."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, cols: Sequence[int] | np.ndarray, vals: Sequence[float] | np.ndarray,
            lo: float, hi: float) -> None:
        k = len(self.lo)
        cols_a = np.asarray(cols, np.int64)
        self.r.append(np.full(cols_a.size, k, np.int64))
        self.c.append(cols_a)
        self.v.append(np.asarray(vals, float))
        self.lo.append(lo)
        self.hi.append(hi)

    def add_many(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 lo: np.ndarray, hi: np.ndarray) -> None:
        """Rows given as triplets with local row numbers 0..len(lo)-1."""
        k = len(self.lo)
        self.r.append(rows.astype(np.int64) + k)
        self.c.append(cols.astype(np.int64))
        self.v.append(vals.astype(float))
        self.lo.extend(lo.tolist())
        self.hi.extend(hi.tolist())

    def matrix(self, ncol: int) -> sp.csr_matrix:
        r = np.concatenate(self.r) if self.r else np.zeros(0, np.int64)
        c = np.concatenate(self.c) if self.c else np.zeros(0, np.int64)
        v = np.concatenate(self.v) if self.v else np.zeros(0)
        return sp.csr_matrix((v, (r, c)), shape=(len(self.lo), ncol))


def _zero_point(pkg: SensitivityPackage) -> int | None:
    for i, p in enumerate(pkg.points):
        if p.activation_fraction == 0.0:
            return i
    return None


def effective_limits(pkg: SensitivityPackage) -> tuple[FloatArray, FloatArray]:
    """Per row (vm rows, then loading rows) the limits the clearing applies: the package's
    limits, widened to the base value for rows violated at the zero point (module doc)."""
    lim = pkg.limits
    v, l = len(pkg.vm_rows), len(pkg.loading_rows)
    lb = np.concatenate([np.full(v, lim.vm_min_pu), np.full(l, lim.loading_min_percent)])
    ub = np.concatenate([np.full(v, lim.vm_max_pu), np.full(l, lim.loading_max_percent)])
    z = _zero_point(pkg)
    if z is not None:
        base = np.concatenate([pkg.vm_pu[z], pkg.loading_percent[z]])
        lb, ub = np.minimum(lb, base), np.maximum(ub, base)
    return lb, ub


def _add_package_rows(rows: _Rows, blk: _Block, *, prefilter: bool) -> None:
    pkg, m, n = blk.pkg, blk.m, blk.n
    pf = pkg.p_flex_mw
    # bid box (vectorised): dP - hi_box b <= 0 and dP - lo_box b >= 0
    for i in range(m):
        cols = blk.dp(i)
        lo_box, hi_box = blk.lo - pf[i], blk.hi - pf[i]
        k = np.arange(n)
        rr = np.concatenate([k, k])
        cc = np.concatenate([cols, np.full(n, blk.b(i))])
        rows.add_many(rr, cc, np.concatenate([np.ones(n), -hi_box]),
                      np.full(n, -INF), np.zeros(n))
        rows.add_many(rr, cc, np.concatenate([np.ones(n), -lo_box]),
                      np.zeros(n), np.full(n, INF))
        if blk.coupled:   # dv_lo <= offset_i + s_i <= dv_hi when selected, else s_i = 0
            s_lo, s_hi = blk.s_range(i)
            rows.add([blk.s(i), blk.b(i)], [1.0, -s_hi], -INF, 0.0)
            rows.add([blk.s(i), blk.b(i)], [1.0, -s_lo], 0.0, INF)
    rows.add([blk.b(i) for i in range(m)], np.ones(m), 1.0, 1.0)
    for i in range(m):
        for k2 in range(m):
            if i == k2:
                continue
            d = pf[i] - pf[k2]
            rows.add(np.append(blk.dp(i), blk.b(i)), np.append(d, 0.5 * float(d @ d)),
                     0.0, INF)
    # voltage / loading rows: one row each, the prediction at the selected point
    sens = [np.vstack([pkg.vtdf[i], pkg.ltdf[i]]) for i in range(m)]
    base = [np.concatenate([pkg.vm_pu[i], pkg.loading_percent[i]]) for i in range(m)]
    g = ([np.concatenate([blk.g_v[i], blk.g_l[i]]) for i in range(m)]  # type: ignore[index]
         if blk.coupled else None)
    lb, ub = effective_limits(pkg)
    for i in range(m):
        # per point (the convex-hull form): lb b_i <= V_i b_i + S_i dP_i + g_i s_i <= ub b_i;
        # only rows that can reach a limit from point i's box are kept (exact)
        lo_box, hi_box = blk.lo - pf[i], blk.hi - pf[i]
        mid = sens[i] @ (0.5 * (lo_box + hi_box))
        rad = np.abs(sens[i]) @ (0.5 * (hi_box - lo_box))
        if g is not None:
            s_lo, s_hi = blk.s_range(i)
            mid = mid + g[i] * 0.5 * (s_lo + s_hi)
            rad = rad + np.abs(g[i]) * 0.5 * (s_hi - s_lo)
        up = base[i] + mid + rad >= ub - _TOL * (1 + np.abs(ub))
        down = base[i] + mid - rad <= lb + _TOL * (1 + np.abs(lb))
        if not prefilter:
            up[:], down[:] = True, True
        for side, keep_side, limit in ((1, up, ub), (-1, down, lb)):
            idx = np.flatnonzero(keep_side)
            if not idx.size:
                continue
            parts_c = [np.broadcast_to(blk.dp(i), (idx.size, n)),
                       np.full((idx.size, 1), blk.b(i))]
            parts_v = [sens[i][idx], (base[i][idx] - limit[idx])[:, None]]
            if g is not None:
                parts_c.append(np.full((idx.size, 1), blk.s(i)))
                parts_v.append(g[i][idx][:, None])
            cc, vv = np.hstack(parts_c), np.hstack(parts_v)
            rr = np.repeat(np.arange(idx.size), cc.shape[1])
            if side == 1:      # V b + S dP + g s - ub b <= 0
                rows.add_many(rr, cc.ravel(), vv.ravel(), np.full(idx.size, -INF),
                              np.zeros(idx.size))
            else:              # ... - lb b >= 0
                rows.add_many(rr, cc.ravel(), vv.ravel(), np.zeros(idx.size),
                              np.full(idx.size, INF))


def _slack_ranges(areas: Sequence[AreaPackage], blocks: list[_Block], mv_blk: _Block) -> None:
    """Each coupled area's slack-voltage change can only lie within what the MV package's
    linear model reaches from its points over the areas' bounds, and within the MV row's
    limits (exact for the linear model; keeps the LV rows and s bounds tight)."""
    mv = mv_blk.pkg
    z = _zero_point(mv)
    lb, ub = effective_limits(mv)
    for a, b in zip(areas, blocks):
        if not b.coupled or a.mv_slack_row not in mv.vm_rows:
            continue
        r = mv.vm_rows.index(a.mv_slack_row)
        lo_v, hi_v = np.inf, -np.inf
        for k in range(mv.m):
            lo_box, hi_box = mv_blk.lo - mv.p_flex_mw[k], mv_blk.hi - mv.p_flex_mw[k]
            sens = mv.vtdf[k, r]
            mid = float(mv.vm_pu[k, r] + sens @ (0.5 * (lo_box + hi_box)))
            rad = float(np.abs(sens) @ (0.5 * (hi_box - lo_box)))
            lo_v, hi_v = min(lo_v, mid - rad), max(hi_v, mid + rad)
        lo_v, hi_v = max(lo_v, float(lb[r])), min(hi_v, float(ub[r]))
        v0 = float(mv.vm_pu[z, r]) if z is not None else 0.0
        b.dv_lo = max(lo_v - v0, -S_MAX_PU)
        b.dv_hi = min(hi_v - v0, S_MAX_PU)


def _x_terms(blk: _Block, j: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cols, coefs) of ``sum_j x_j`` over columns ``j`` (all by default)."""
    jj = np.arange(blk.n) if j is None else j
    cols: list[Any] = []
    vals: list[Any] = []
    for i in range(blk.m):
        cols += [blk.dp(i)[jj], [blk.b(i)]]
        vals += [np.ones(jj.size), [float(blk.pkg.p_flex_mw[i, jj].sum())]]
    return np.concatenate(cols), np.concatenate(vals)


def _lv_block(area: AreaPackage) -> _Block:
    pkg, g_v, g_l, g_off = split_slack_column(area.package)
    bids = align_bids(pkg, area.bids)
    check_bids(pkg, bids)
    if (bids.indivisible | (bids.min_mw > 0)).any():
        raise ClearingError(f"area {area.name!r}: indivisible bids or bids with min_mw are not "
                            "supported by the region clearing")
    weight = bids.price_eur_per_mwh * np.sign(bids.volume_mw)
    return _Block(area.name, pkg, bids.lower_mw, bids.upper_mw, weight, g_v, g_l, g_off)


def clear_region(areas: Sequence[AreaPackage], request_mw: float, *,
                 mv: SensitivityPackage | None = None,
                 fixed_points: Mapping[str, int] | None = None, prefilter: bool = True,
                 mip_rel_gap: float = 1e-6, time_limit_s: float | None = None,
                 mip_start: bool = True) -> RegionClearing:
    """Clear ``request_mw`` over every area's bids at least cost (``sum c_j |x_j|``).

    ``mv`` (the MV DSO's package, columns = the areas' ``mv_column``) couples the areas:
    its rows bind the areas' net injections and its slack-voltage predictions enter the LV
    rows of areas whose package has the :data:`SLACK_COLUMN`. ``fixed_points`` (``{area
    name or "mv": point}``) fixes regions (then the problem is an LP): the enumeration
    oracle. Every package is checked against its bids (:func:`check_bids`).

    ``mip_start``: first solve the LPs with every package at its k-th point (k = 0 .. m-1,
    the last point for packages with fewer) and hand the cheapest feasible one to HiGHS as
    its incumbent (on SimBench semiurb HiGHS otherwise found no feasible point in 150 s)."""
    t0 = time.perf_counter()
    if not np.isfinite(request_mw):
        raise ClearingError(f"request_mw must be finite, got {request_mw!r}")
    names = [a.name for a in areas]
    if len(set(names)) != len(names):
        raise ClearingError("area names must be unique")
    blocks = [_lv_block(a) for a in areas]
    mv_blk: _Block | None = None
    if mv is not None:
        if mv.columns != tuple(a.mv_column for a in areas if a.mv_column is not None) and \
                set(mv.columns) != {a.mv_column for a in areas if a.mv_column is not None}:
            raise ClearingError("the MV package's columns must be the areas' mv_column")
        z = _zero_point(mv)
        if z is None:
            raise ClearingError("the MV package needs a point with activation fraction 0")
        blk_by_col = {a.mv_column: b for a, b in zip(areas, blocks)}
        lo = np.array([blk_by_col[c].lo.sum() for c in mv.columns])
        hi = np.array([blk_by_col[c].hi.sum() for c in mv.columns])
        mv_blk = _Block("mv", mv, lo, hi, np.zeros(mv.n), None, None)
        _slack_ranges(areas, blocks, mv_blk)
    else:
        for b in blocks:       # no MV package: nothing to couple to
            b.g_v = b.g_l = b.g_off = None
    col = 0
    for b in blocks + ([mv_blk] if mv_blk is not None else []):
        b.col0 = col
        col += b.width
    ncol = col
    rows = _Rows()
    for b in blocks + ([mv_blk] if mv_blk is not None else []):
        _add_package_rows(rows, b, prefilter=prefilter)
    # balance
    bal = [_x_terms(b) for b in blocks]
    rows.add(np.concatenate([c for c, _ in bal]), np.concatenate([v for _, v in bal]),
             float(request_mw), float(request_mw))
    if mv_blk is not None and mv is not None:
        z0 = _zero_point(mv)
        assert z0 is not None
        for a, b in zip(areas, blocks):
            if a.mv_column is None:
                continue
            k = mv.columns.index(a.mv_column)
            c_mv, v_mv = _x_terms(mv_blk, np.array([k]))
            c_lv, v_lv = _x_terms(b)
            rows.add(np.concatenate([c_mv, c_lv]), np.concatenate([v_mv, -v_lv]), 0.0, 0.0)
            if not b.coupled:
                continue
            if a.mv_slack_row is None or a.mv_slack_row not in mv.vm_rows:
                raise ClearingError(f"area {a.name!r}: mv_slack_row {a.mv_slack_row!r} is "
                                    "not a voltage row of the MV package")
            r = mv.vm_rows.index(a.mv_slack_row)
            cols: list[Any] = []
            vals: list[Any] = []
            for i in range(mv_blk.m):
                cols += [mv_blk.dp(i), [mv_blk.b(i)]]
                vals += [-mv.vtdf[i, r], [-float(mv.vm_pu[i, r])]]
            cols += [[b.s(i) for i in range(b.m)], [b.b(i) for i in range(b.m)]]
            vals += [np.ones(b.m), b.g_off]
            v0 = float(mv.vm_pu[z0, r])
            rows.add(np.concatenate(cols), np.concatenate(vals), -v0, -v0)
    cost = np.zeros(ncol)
    for b in blocks:
        for i in range(b.m):
            cost[b.dp(i)] = b.weight
            cost[b.b(i)] = float(b.pkg.p_flex_mw[i] @ b.weight)
    col_lo, col_hi = np.full(ncol, -INF), np.full(ncol, INF)
    integ = np.zeros(ncol, np.int8)
    for b in blocks + ([mv_blk] if mv_blk is not None else []):
        bcols = [b.b(i) for i in range(b.m)]
        col_lo[bcols], col_hi[bcols], integ[bcols] = 0.0, 1.0, 1
        pf = b.pkg.p_flex_mw
        for i in range(b.m):
            col_lo[b.dp(i)] = np.minimum(b.lo - pf[i], 0.0)
            col_hi[b.dp(i)] = np.maximum(b.hi - pf[i], 0.0)
            if b.coupled:
                col_lo[b.s(i)], col_hi[b.s(i)] = b.s_range(i)
    for name, point in (fixed_points or {}).items():
        fb = mv_blk if name == "mv" else next((x for x in blocks if x.name == name), None)
        if fb is None or not 0 <= point < fb.m:
            raise ClearingError(f"fixed_points: no area {name!r} with point {point}")
        bcols = [fb.b(i) for i in range(fb.m)]
        col_lo[bcols] = col_hi[bcols] = 0.0
        col_lo[fb.b(point)] = col_hi[fb.b(point)] = 1.0
    a_mat = rows.matrix(ncol)
    lp = LinearProgram(cost, col_lo, col_hi, a_mat, np.array(rows.lo), np.array(rows.hi),
                       integ)
    t_build = time.perf_counter() - t0
    start = None
    all_blocks = blocks + ([mv_blk] if mv_blk is not None else [])
    if mip_start and not fixed_points and len(all_blocks) > 1:
        best = np.inf
        for k in range(max(b.m for b in all_blocks)):
            lo_k, hi_k = col_lo.copy(), col_hi.copy()
            for b in all_blocks:
                bcols = [b.b(i) for i in range(b.m)]
                lo_k[bcols] = hi_k[bcols] = 0.0
                lo_k[b.b(min(k, b.m - 1))] = hi_k[b.b(min(k, b.m - 1))] = 1.0
            o = solve_highs(replace(lp, col_lo=lo_k, col_hi=hi_k,
                                    integrality=np.zeros(ncol, np.int8)))
            if o.x is not None and o.objective is not None and o.objective < best:
                best, start = o.objective, o.x
    out = solve_highs(lp, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s, start=start)
    res = RegionClearing(out.status, out.message, float(request_mw), columns=ncol,
                         rows=a_mat.shape[0], binaries=int(integ.sum()),
                         build_time_s=t_build, solve_time_s=out.solve_time_s)
    if out.x is None or not out.status.has_solution:
        return res
    x = out.x
    res.cost_eur_per_h = float(out.objective or 0.0)
    for b in blocks + ([mv_blk] if mv_blk is not None else []):
        i = int(np.argmax([x[b.b(k)] for k in range(b.m)]))
        dp = x[b.dp(i)]
        act = b.pkg.p_flex_mw[i] + dp
        ds = float(x[b.s(i)]) if b.coupled else 0.0     # s_i: from the point's slack
        vm, ld = b.pkg.predict(i, act)
        if b.coupled:
            vm = vm + b.g_v[i] * ds                    # type: ignore[index]
            ld = ld + b.g_l[i] * ds                    # type: ignore[index]
        if b is mv_blk:
            res.mv_point = i
            res.mv_predicted_vm_pu, res.mv_predicted_loading_percent = vm, ld
            continue
        res.points[b.name] = i
        res.activation_mw[b.name] = act
        res.slack_dv_pu[b.name] = ds + (float(b.g_off[i]) if b.g_off is not None else 0.0)
        res.predicted_vm_pu[b.name] = vm
        res.predicted_loading_percent[b.name] = ld
    return res


def enumerate_regions(areas: Sequence[AreaPackage], request_mw: float, *,
                      mv: SensitivityPackage | None = None, **options: object
                      ) -> tuple[RegionClearing | None, int]:
    """The oracle: one LP per combination of regions (``m^N``); the cheapest feasible one
    and the number of LPs solved."""
    names = [a.name for a in areas] + (["mv"] if mv is not None else [])
    sizes = [a.package.m for a in areas] + ([mv.m] if mv is not None
                                                                     else [])
    best: RegionClearing | None = None
    count = 0
    for combo in itertools.product(*(range(s) for s in sizes)):
        count += 1
        r = clear_region(areas, request_mw, mv=mv, fixed_points=dict(zip(names, combo)),
                         **options)  # type: ignore[arg-type]
        if r.ok and (best is None or r.cost_eur_per_h < best.cost_eur_per_h):
            best = r
    return best, count
