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
  response to the slack voltage, published as the column :data:`SLACK_COLUMN`); a row side
  that cannot reach its limit from point i's bid box and slack range is left out (its
  exact range over the box is ``centre +- radius`` in closed form), and a zero side of the
  bid box is a column bound, not a row;

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

**Lazy areas** (exact; what makes 111 packages fast). An LV area whose rows can reach no
limit from any point's box (the prefilter's closed form) has a feasible set equal to its
bid box, so it enters *relaxed*: one column per bid, no points, binaries or rows. With
``lazy`` every other area starts relaxed too, a relaxation of the problem. Each round
solves the LP relaxation of the current model; every relaxed area is checked at its
activation: a point whose Voronoi region holds it and whose rows hold there (with the
slack change the MV package predicts). Areas failing the check become full and the round
is repeated; otherwise the incumbent (the LPs with every full block at a fixed point: the
point nearest to its LP activation first, then its argmax-``b``) ends the clearing if it
is within ``mip_rel_gap`` of the LP bound and passes the check, else the round is solved
to ``mip_rel_gap`` by the branching over points below, or, when that does not close
within its budget, by HiGHS's MILP with the best incumbent as MIP start, and checked the
same way. A solution of a relaxation that is feasible for the full problem is optimal for
it; the gap certificate is a bound of the relaxation, hence of the full problem. On
SimBench semiurb (111 packages) 10-16 areas end up full after 2-4 rounds.

**Branching over points** (:func:`_branch`; exact to ``mip_rel_gap`` like HiGHS). A
block's binaries choose one point, so a branch fixes a whole block at one of its points
(m children that cover every choice) rather than one binary at 0 or 1. Depth first, the
cheapest child first, each node's LP solved in one HiGHS instance from the basis of the
one before (a child changes one block's column bounds), a node closed when its LP is
within ``mip_rel_gap`` of the best incumbent. The LP relaxation of the convex-hull form
can be weak where one block (e.g. the MV package's) mixes two points: on the first frame
of SimBench semiurb at privacy "exact" the bound was 0.7-1.1 % below the optimum with a
single fractional block, HiGHS's branch and bound took 80-300 s per clearing to close it
(root cuts on ~25k columns) and the branching over that block's 3 points closes it in a
few LPs.

**Format 2** (:class:`~flexcore.exchange.hardened.HardenedPackage`, e.g. the rows a region
DSO publishes lazily, ``flexcore.region.publish``): point i's rows ``a x <= rhs`` enter as
rows of the same form with ``V_ir = a P_i`` (slack column included), ``S = a`` on the bids,
``g`` = the slack column's entry, ``ub = rhs`` (the DSO applied the base-case rule), each
row vacuous at the other points. A format-2 MV package has one column per area injection
(``mv_column``) and one per published link (``mv_slack_column``: the area's slack change,
tied to the LV block's ``sum_i (s_i + o_i b_i)``); an area without a published link has
its slack change free within :data:`S_MAX_PU`. The TSO predicts nothing for format-2
blocks (only the DSOs can). **Order:** the rows of every block are ordered by content and
its columns by the bid table (format 2: not by the DSO's shuffle), so neither a DSO's key
salt nor its shuffle changes the MILP.

**Warm start.** Consecutive LP relaxations differ little (a lazy round makes a few areas
full, a DSO publishes a row, a refinement round adds a point, the next frame has new
numbers on mostly the same structure), so each starts from HiGHS's optimal basis of the
one before (:class:`LpBasis`): every column and row has a key built from the model's
arrays (block name, kind, point index, bid id; a row id, or for format 2 the row's
content), kept columns and rows keep their status, the new columns of a block that was
relaxed place it at the point nearest to its old activation, a new point's columns sit at
0 (:func:`_crash`; pressed to the side their reduced costs push them, as the basis holds
the bid at the block's other points), new rows are basic, and the count of basic variables
is repaired (:func:`flexcore.market.direct.complete_basis`). A block that was full in the
last LP takes its statuses from that LP only: a point index it lacked there may have meant
another point in the LP before (the last frame's refinement point, now this frame's), and
those statuses gave a basis with surplus basic columns, singular once repaired, which
HiGHS dropped for a cold solve (SimBench semiurb, a refinement round: 7,215 -> 259 simplex
iterations, ``bench.bench_region_lpwarm``). Exact: the basis is only the simplex's start;
one HiGHS rejects, or from which it does not end optimal, is dropped for a cold solve.

**Lazy bid boxes.** The bid-box rows of the full blocks are most of a large LP
relaxation's rows (SimBench semiurb, 31 full areas with 5-7 points each: 13k of 15k rows)
and few of them bind: a point's ``dP_i`` is pressed against its box only where ``b_i`` is
fractional. An LP relaxation of at least ``ipm_rows`` rows is therefore solved without the
box rows but those the last one ended with (:attr:`LpBasis.box_rows`) and those its starting
basis holds tight; when that warm start runs out of iterations (a new frame, a refinement
round), the interior point method solves it without any box row (1.2-2.2k rows instead of
4-7k: ~0.5 s instead of 1.2-1.6 s on SimBench semiurb). The box rows its optimum violates
are then added and it is solved again in the same HiGHS instance (``addRows``, the new
rows basic: the dual simplex goes on from the last optimal basis; :class:`_RowAdding`)
until none is violated. Exact: its optimum then satisfies every row of the relaxation, so
it is the relaxation's optimum, and the basis with the rows left out basic is an optimal
basis of the whole relaxation (what the next LP and the branching start from). The
incumbent LPs, the branching and the MILP keep every row. (Leaving out the point rows as
well was slower: adding them moved the optimum by thousands of simplex iterations.
Projecting a block onto the directions of its rows instead of copying its bids per point
gave a relaxation too weak for the incumbent to close: HiGHS's MILP took 85-150 s.)

Only divisible bids (no ``min_mw``, not indivisible) are supported here. This module
imports neither pandapower nor the grid code.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError
from flexcore.exchange.enums import ClearingStatus
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import FloatArray, IntArray
from flexcore.exchange.package import AnyPackage, SensitivityPackage, check_bids
from flexcore.market.direct import (
    BASIS_BASIC,
    BASIS_LOWER,
    BASIS_NEW,
    BASIS_UPPER,
    INF,
    BasisStatus,
    HighsOutcome,
    LinearProgram,
    LpMethod,
    _new_highs,
    align_bids,
    basis_of,
    complete_basis,
    highs_arrays,
    highs_basis,
    solve_highs,
)

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
    package: AnyPackage
    bids: BidTable
    mv_column: str | None = None       # the MV package column of this area's injection
    mv_slack_row: str | None = None    # the MV package voltage row of this area's slack
    #: format 2: the MV package column of this area's slack-voltage change, when the MV DSO
    #: published its link (module doc "Format 2"); None: the change is free within S_MAX_PU
    mv_slack_column: str | None = None


@dataclass(frozen=True)
class BlockPlace:
    """Where one block stood in an LP relaxation's optimum (:class:`LpBasis`): its column
    ids, its activation and, for a full block, its points' activations and ``b``."""

    columns: tuple[str, ...]
    activation_mw: FloatArray              # (n,)
    p_flex_mw: FloatArray | None = None    # (m, n), full blocks only
    b: FloatArray | None = None            # (m,), full blocks only


@dataclass(frozen=True)
class LpBasis:
    """HiGHS's optimal basis of a clearing's last LP relaxation, keyed by each column's and
    row's identity (block name, kind, point, bid id or row id; never a position), and the
    column values: what the next LP relaxation starts from (module doc "Warm start").

    ``col_status`` / ``row_status`` also hold the statuses of the LP before for the keys
    the last one lacks (e.g. the full areas of the last frame's final clearing, after a
    clearing in which no area could bind); ``last_cols`` / ``last_rows``: the last LP's
    own, from which the next basis is merged (so it holds at most two LPs). ``places``:
    per block of the last LP where it stood (:class:`BlockPlace`), from which a block whose
    optimum moves to another point is placed (:func:`_crash`)."""

    col_status: Mapping[Hashable, int]
    row_status: Mapping[Hashable, int]
    col_value: Mapping[Hashable, float]
    last_cols: Mapping[Hashable, int]
    last_rows: Mapping[Hashable, int]
    places: Mapping[str, BlockPlace] = field(default_factory=dict)
    #: the bid-box rows the last LP relaxation ended with (module doc "Lazy bid boxes")
    box_rows: frozenset[Hashable] = frozenset()

    @staticmethod
    def of(col_keys: Sequence[Hashable], row_keys: Sequence[Hashable], basis: BasisStatus,
           x: FloatArray, before: LpBasis | None, model: _Model | None = None,
           box_rows: frozenset[Hashable] = frozenset()) -> LpBasis:
        cols = dict(zip(col_keys, basis.col.tolist()))
        rows = dict(zip(row_keys, basis.row.tolist()))
        all_cols, all_rows = cols, rows
        if before is not None:
            all_cols = {**before.last_cols, **cols}
            all_rows = {**before.last_rows, **rows}
        places = {} if model is None else _places(model, x)
        return LpBasis(all_cols, all_rows, dict(zip(col_keys, x.tolist())), cols, rows,
                       places, box_rows)


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
    full_areas: int = 0        # LV areas in the full form in the last round
    #: the names of those areas: ``warm_full`` of the next clearing (:func:`clear_region`)
    full_names: tuple[str, ...] = ()
    lazy_rounds: int = 0       # MILPs solved (module doc "Lazy areas")
    build_time_s: float = 0.0  # model assembly, all rounds
    start_time_s: float = 0.0  # the incumbent LPs, all rounds
    solve_time_s: float = 0.0  # HiGHS MILP solves, all rounds
    lp_relaxations: int = 0    # LP relaxations solved (one per round)
    lp_iterations: int = 0     # their simplex iterations (HiGHS simplex_iteration_count)
    lp_time_s: float = 0.0     # their HiGHS time (part of solve_time_s)
    lp_warm_started: int = 0   # of them solved from a basis (:class:`LpBasis`)
    lp_warm_rejected: int = 0  # ... given a basis but solved cold (rejected or not optimal)
    #: the last LP relaxation's optimal basis: ``warm`` of the next clearing
    lp_basis: LpBasis | None = None

    @property
    def ok(self) -> bool:
        return self.status.has_solution

    def cost_of(self, name: str, bids: BidTable) -> float:
        """``sum_j c_j |x_j|`` of one area."""
        x = self.activation_mw[name]
        return float(np.abs(x) @ bids.price_eur_per_mwh)


# --------------------------------------------------------------------------- model
_CHECK_TOL = 1e-9      # a relaxed area's rows must hold to this (absolute, p.u. / %)
_VORONOI_TOL = 1e-9    # ... and x must lie in the chosen point's region to this (MW^2)


class _Rows:
    """Sparse rows collected block-wise as dense ``(k, w)`` column/value arrays (zeros are
    dropped), then assembled in one CSR matrix; each row with its key (:class:`LpBasis`)."""

    def __init__(self) -> None:
        self.r: list[IntArray] = []
        self.c: list[IntArray] = []
        self.v: list[FloatArray] = []
        self.lo: list[FloatArray] = []
        self.hi: list[FloatArray] = []
        self.keys: list[Hashable] = []
        self.count = 0

    def add(self, cols: npt.ArrayLike, vals: npt.ArrayLike, lo: npt.ArrayLike,
            hi: npt.ArrayLike, keys: Sequence[Hashable]) -> IntArray:
        """``k`` rows: ``cols``/``vals`` of shape ``(k, w)``, ``lo``/``hi`` broadcast to k,
        ``keys`` k; returns their row indices."""
        c = np.atleast_2d(np.asarray(cols, np.int64))
        v = np.atleast_2d(np.asarray(vals, float))
        k = c.shape[0]
        assert len(keys) == k
        if not k:
            return np.zeros(0, np.int64)
        self.keys.extend(keys)
        nz = v != 0.0
        self.r.append(np.broadcast_to(np.arange(self.count, self.count + k)[:, None],
                                      c.shape)[nz])
        self.c.append(c[nz])
        self.v.append(v[nz])
        self.lo.append(np.broadcast_to(np.asarray(lo, float), (k,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, float), (k,)))
        self.count += k
        return np.arange(self.count - k, self.count)

    def program(self, cost: FloatArray, col_lo: FloatArray, col_hi: FloatArray,
                integrality: npt.NDArray[np.int8]) -> LinearProgram:
        ncol = len(cost)
        a = sp.csr_matrix((np.concatenate(self.v), (np.concatenate(self.r),
                                                    np.concatenate(self.c))),
                          shape=(self.count, ncol))
        return LinearProgram(cost, col_lo, col_hi, a, np.concatenate(self.lo),
                             np.concatenate(self.hi), integrality)


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


@dataclass
class _Block:
    """One package in the MILP (an LV area or the MV DSO).

    A **full** block is the convex-hull form of the module doc; columns ``dP (m*n) | b (m)
    | s (m, coupled only)``. A **relaxed** block has only the activation ``x (n)`` within
    the bid box: its points, Voronoi regions and rows are left out, a relaxation of the full
    block (the regions cover the box)."""

    name: str
    pkg: AnyPackage
    lo: FloatArray             # (n,) lower bounds of the activation
    hi: FloatArray
    weight: FloatArray         # (n,) cost per MW
    g_v: FloatArray | None     # (m, v) slack response or None
    g_l: FloatArray | None
    g_off: FloatArray | None = None   # (m,) the points' slack offsets
    dv_lo: float = -S_MAX_PU   # range of the slack-voltage change (from the MV package)
    dv_hi: float = S_MAX_PU
    mv_col: int | None = None  # this area's column in the MV package
    mv_row: int | None = None  # the MV voltage row of this area's slack (coupled only)
    mv_sigma: int | None = None  # format 2: the MV column of this area's slack change
    full: bool = True
    col0: int = 0
    # set by _prepare
    sens: FloatArray = field(default_factory=lambda: np.zeros((0, 0, 0)))   # (m, r, n)
    base: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))      # (m, r)
    g: FloatArray | None = None                                             # (m, r)
    lb: FloatArray = field(default_factory=lambda: np.zeros(0))             # (r,)
    ub: FloatArray = field(default_factory=lambda: np.zeros(0))
    keep_up: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), bool))
    keep_down: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), bool))
    #: (r,) position of each row in the content order (:func:`_content_rank`)
    rank: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: format 2: (m, r) whether row r is one of point i's rows (None: every row is)
    own: npt.NDArray[np.bool_] | None = None
    #: format 2: the package as published (with the slack column) and the index of its
    #: slack column (None: not coupled); ``pkg`` then holds the bid columns in block order
    raw: HardenedPackage | None = None
    raw_cols: IntArray | None = None   # (n,) the raw package column of each block column
    k_slack: int | None = None
    # set by _program (full blocks; -1: no such row): the rows of each dP_ij's bid box and
    # each s_i's range, and the row tying the slack change to the MV package
    box_hi_row: IntArray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    box_lo_row: IntArray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    s_hi_row: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    s_lo_row: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    link_row: int = -1

    @property
    def m(self) -> int:
        return self.pkg.m

    @property
    def n(self) -> int:
        return self.pkg.n

    @property
    def coupled(self) -> bool:
        return self.g_v is not None or (self.raw is not None and self.k_slack is not None)

    @property
    def bindable(self) -> bool:
        """Some row can reach a limit from some point's box (else every region is feasible
        over the whole box and the block may stay relaxed)."""
        return bool(self.keep_up.any() or self.keep_down.any())

    @property
    def width(self) -> int:
        if not self.full:
            return self.n
        return self.m * self.n + self.m + (self.m if self.coupled else 0)

    @property
    def dp(self) -> IntArray:
        """(m, n) columns of dP (full)."""
        return self.col0 + np.arange(self.m * self.n).reshape(self.m, self.n)

    @property
    def b(self) -> IntArray:
        return self.col0 + self.m * self.n + np.arange(self.m)

    @property
    def s(self) -> IntArray:
        return self.col0 + self.m * self.n + self.m + np.arange(self.m)

    @property
    def x(self) -> IntArray:
        """(n,) columns of the activation (relaxed)."""
        return self.col0 + np.arange(self.n)

    def s_range(self) -> tuple[FloatArray, FloatArray]:
        """(m,) bounds of ``s_i`` when point i is selected (``dv_lo <= o_i + s_i <= dv_hi``,
        relaxed to include 0)."""
        off = self.g_off if self.g_off is not None else np.zeros(self.m)
        return np.minimum(self.dv_lo - off, 0.0), np.maximum(self.dv_hi - off, 0.0)

    def boxes(self) -> tuple[FloatArray, FloatArray]:
        """(m, n) bounds of dP_i when point i is selected."""
        pf = self.pkg.p_flex_mw
        return self.lo[None, :] - pf, self.hi[None, :] - pf


def _prepare(blk: _Block, *, prefilter: bool) -> None:
    """Stack each point's rows and keep the sides that can reach a limit from the point's
    box (and slack range): the exact range of ``S dP + g s`` over a box is ``centre +-
    radius`` in closed form, so a dropped side cannot bind in the linear model. Format 2:
    the rows are set by :func:`_hardened_rows` before."""
    pkg = blk.pkg
    if isinstance(pkg, SensitivityPackage):
        blk.sens = np.concatenate([pkg.vtdf, pkg.ltdf], axis=1)
        blk.base = np.concatenate([pkg.vm_pu, pkg.loading_percent], axis=1)
        blk.g = (np.concatenate([blk.g_v, blk.g_l], axis=1)
                 if blk.g_v is not None and blk.g_l is not None else None)
        blk.lb, blk.ub = effective_limits(pkg)
    else:
        _hardened_rows(blk)
    lo_box, hi_box = blk.boxes()
    mid = np.einsum("mrn,mn->mr", blk.sens, 0.5 * (lo_box + hi_box))
    rad = np.einsum("mrn,mn->mr", np.abs(blk.sens), 0.5 * (hi_box - lo_box))
    if blk.g is not None:
        s_lo, s_hi = blk.s_range()
        mid = mid + blk.g * (0.5 * (s_lo + s_hi))[:, None]
        rad = rad + np.abs(blk.g) * (0.5 * (s_hi - s_lo))[:, None]
    fin_u, fin_l = np.isfinite(blk.ub), np.isfinite(blk.lb)
    if prefilter:
        ub = np.where(fin_u, blk.ub, 0.0)
        lb = np.where(fin_l, blk.lb, 0.0)
        blk.keep_up = fin_u & (blk.base + mid + rad >= ub - _TOL * (1 + np.abs(ub)))
        blk.keep_down = fin_l & (blk.base + mid - rad <= lb + _TOL * (1 + np.abs(lb)))
    else:
        blk.keep_up = np.broadcast_to(fin_u, blk.base.shape).copy()
        blk.keep_down = np.broadcast_to(fin_l, blk.base.shape).copy()
    if blk.own is not None:
        blk.keep_up &= blk.own
        blk.keep_down &= blk.own
    blk.rank = _content_rank(blk)


def _content_rank(blk: _Block) -> IntArray:
    """Each row's rank in an order by content (limits, base values, and fixed projections of
    the sensitivities and slack response), not by the package's row order: a package's rows
    come sorted by salted keys, so a DSO's salt would otherwise reorder the MILP's rows, and
    HiGHS may end within the gap at another point (README "Privacy of the region's
    packages"). Rows equal in all these keys are (but for a measure-zero chance) equal
    rows, i.e. equal constraints, so their order does not matter."""
    r = blk.base.shape[1]
    if not r:
        return np.zeros(0, np.int64)
    flat = blk.sens.transpose(1, 0, 2).reshape(r, -1)
    weights = np.cos(0.7 * np.arange(flat.shape[1]) + 0.1)
    parts = [blk.lb[:, None], blk.ub[:, None], blk.base.T, (flat @ weights)[:, None]]
    if blk.g is not None:
        parts.append(blk.g.T)
    keys = np.nan_to_num(np.hstack(parts), posinf=np.finfo(float).max,
                         neginf=-np.finfo(float).max)
    order = np.lexsort(keys.T[::-1])
    rank = np.empty(r, np.int64)
    rank[order] = np.arange(r)
    return rank


def _hardened_rows(blk: _Block) -> None:
    """The rows of a format-2 block: point i's published rows ``a x <= rhs`` (``x`` with
    the slack column's value ``o_i + s_i``) as rows of the format-1 form, i.e. ``base =
    a P_i`` (slack column included), ``S = a`` on the bid columns, ``g`` = the slack
    column's entry, ``ub = rhs``, ``lb = -inf``; rows of all points stacked, each marked as
    its point's own (``own``). The publisher applied the base-case rule itself."""
    raw, cols = blk.raw, blk.raw_cols
    assert raw is not None and cols is not None
    m = raw.m
    r = int(sum(raw.row_counts))
    blk.sens = np.zeros((m, r, cols.size))
    blk.base = np.zeros((m, r))
    blk.own = np.zeros((m, r), bool)
    g = np.zeros((m, r)) if blk.k_slack is not None else None
    blk.ub = np.zeros(r)
    start = 0
    for i, (a, rhs) in enumerate(zip(raw.rows_a, raw.rows_rhs)):
        sl = slice(start, start + a.shape[0])
        blk.sens[i, sl] = a[:, cols]
        blk.base[i, sl] = a @ raw.p_flex_mw[i]
        if g is not None:
            g[i, sl] = a[:, blk.k_slack]
        blk.ub[sl] = rhs
        blk.own[i, sl] = True
        start = sl.stop
    blk.lb = np.full(r, -np.inf)
    blk.g = g


def _hardened(name: str, hp: HardenedPackage, ids: Sequence[str], lo: FloatArray,
              hi: FloatArray, weight: FloatArray, *, slack: bool) -> _Block:
    """A block of the format-2 package ``hp`` with its columns in the order ``ids`` (the
    TSO's order, not the DSO's shuffle: the MILP does not depend on it) and, with
    ``slack``, the package's :data:`SLACK_COLUMN` as the slack-voltage change."""
    where = {c: k for k, c in enumerate(hp.columns)}
    cols = np.array([where[c] for c in ids], np.int64)
    k_slack = where.get(SLACK_COLUMN) if slack else None
    bare = HardenedPackage(
        privacy=hp.privacy, columns=tuple(ids), points=hp.points,
        p_flex_mw=hp.p_flex_mw[:, cols], rows_a=tuple(a[:, cols] for a in hp.rows_a),
        rows_rhs=hp.rows_rhs, excluded=hp.excluded, undeliverable=hp.undeliverable)
    off = None if k_slack is None else hp.p_flex_mw[:, k_slack].copy()
    if off is not None and np.any(np.abs(off) > S_MAX_PU):
        raise ClearingError(f"area {name!r}, column {SLACK_COLUMN!r}: a point's slack offset "
                            f"exceeds {S_MAX_PU} p.u.")
    return _Block(name, bare, lo, hi, weight, None, None, off, raw=hp, raw_cols=cols,
                  k_slack=k_slack)


def _row_ids(blk: _Block, ii: IntArray, rr: IntArray) -> list[Hashable]:
    """The identity of row ``rr[k]`` at point ``ii[k]``: format 1 its row id; format 2 (no
    row ids: the DSO shuffles its rows) its content, i.e. its nonzero coefficients by
    column id (a column added to the package, e.g. an MV link, leaves it alone), its slack
    coefficient and its limit."""
    if isinstance(blk.pkg, SensitivityPackage):
        ids = blk.pkg.vm_rows + blk.pkg.loading_rows
        return [ids[r] for r in rr.tolist()]
    cols = blk.pkg.columns
    out: list[Hashable] = []
    for i, r in zip(ii.tolist(), rr.tolist()):
        a = blk.sens[i, r]
        nz = np.flatnonzero(a)
        g = float(blk.g[i, r]) if blk.g is not None else 0.0
        out.append((tuple(cols[j] for j in nz.tolist()), a[nz].tobytes(), g,
                    float(blk.ub[r])))
    return out


def _full_rows(rows: _Rows, blk: _Block) -> None:
    """The rows of a full block (module doc), all families vectorised."""
    m, n = blk.m, blk.n
    name, ids = blk.name, blk.pkg.columns
    pf = blk.pkg.p_flex_mw
    dp, b = blk.dp, blk.b
    lo_box, hi_box = blk.boxes()
    # bid box: dP_ij - hi_ij b_i <= 0, dP_ij - lo_ij b_i >= 0; a zero side is a column bound
    blk.box_hi_row, blk.box_lo_row = np.full((m, n), -1), np.full((m, n), -1)
    for box, lo, hi, kind, where in ((hi_box, -INF, 0.0, "box-hi", blk.box_hi_row),
                                     (lo_box, 0.0, INF, "box-lo", blk.box_lo_row)):
        ii, jj = np.nonzero(box)
        where[ii, jj] = rows.add(np.column_stack([dp[ii, jj], b[ii]]),
                                 np.column_stack([np.ones(ii.size), -box[ii, jj]]), lo, hi,
                                 [(name, kind, i, ids[j])
                                  for i, j in zip(ii.tolist(), jj.tolist())])
    blk.s_hi_row, blk.s_lo_row = np.full(m, -1), np.full(m, -1)
    if blk.coupled:       # dv_lo <= o_i + s_i <= dv_hi when selected, else s_i = 0
        s_lo, s_hi = blk.s_range()
        for bound, lo, hi, kind, where in ((s_hi, -INF, 0.0, "s-hi", blk.s_hi_row),
                                           (s_lo, 0.0, INF, "s-lo", blk.s_lo_row)):
            ii = np.flatnonzero(bound)
            where[ii] = rows.add(np.column_stack([blk.s[ii], b[ii]]),
                                 np.column_stack([np.ones(ii.size), -bound[ii]]), lo, hi,
                                 [(name, kind, i) for i in ii.tolist()])
    rows.add(b[None, :], np.ones((1, m)), 1.0, 1.0, [(name, "one")])
    # Voronoi (14h): (P_i - P_k) dP_i + 0.5 |P_i - P_k|^2 b_i >= 0
    ii, kk = np.nonzero(~np.eye(m, dtype=bool))
    d = pf[ii] - pf[kk]
    rows.add(np.column_stack([dp[ii], b[ii]]),
             np.column_stack([d, 0.5 * np.einsum("pn,pn->p", d, d)]), 0.0, INF,
             [(name, "voronoi", i, k) for i, k in zip(ii.tolist(), kk.tolist())])
    # per point: lb b_i <= V_i b_i + S_i dP_i + g_i s_i <= ub b_i (kept sides only)
    for keep, limit, lo, hi, kind in ((blk.keep_up, blk.ub, -INF, 0.0, "up"),
                                      (blk.keep_down, blk.lb, 0.0, INF, "down")):
        ii, rr = np.nonzero(keep)
        order = np.lexsort((blk.rank[rr], ii))       # by point, then by content
        ii, rr = ii[order], rr[order]
        cols = [dp[ii], b[ii][:, None]]
        vals = [blk.sens[ii, rr], (blk.base[ii, rr] - limit[rr])[:, None]]
        if blk.g is not None:
            cols.append(blk.s[ii][:, None])
            vals.append(blk.g[ii, rr][:, None])
        rows.add(np.hstack(cols), np.hstack(vals), lo, hi,
                 [(name, kind, i, r) for i, r in zip(ii.tolist(), _row_ids(blk, ii, rr))])


def _columns(blk: _Block) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.int8]]:
    """cost, lower, upper bound and integrality of the block's columns."""
    if not blk.full:
        return blk.weight.copy(), blk.lo.copy(), blk.hi.copy(), np.zeros(blk.n, np.int8)
    m = blk.m
    lo_box, hi_box = blk.boxes()
    cost = [np.tile(blk.weight, m), blk.pkg.p_flex_mw @ blk.weight]
    lo = [np.minimum(lo_box, 0.0).ravel(), np.zeros(m)]
    b_hi = np.ones(m)
    if isinstance(blk.pkg, HardenedPackage):
        b_hi[list(blk.pkg.excluded)] = 0.0     # a region empty on its own (format 2)
    hi = [np.maximum(hi_box, 0.0).ravel(), b_hi]
    integ = [np.zeros(m * blk.n, np.int8), np.ones(m, np.int8)]
    if blk.coupled:
        s_lo, s_hi = blk.s_range()
        cost.append(np.zeros(m))
        lo.append(s_lo)
        hi.append(s_hi)
        integ.append(np.zeros(m, np.int8))
    return np.concatenate(cost), np.concatenate(lo), np.concatenate(hi), np.concatenate(integ)


def _x_terms(blk: _Block, j: IntArray | None = None) -> tuple[IntArray, FloatArray]:
    """(cols, coefs) of ``sum_j x_j`` over columns ``j`` (all by default)."""
    jj = np.arange(blk.n) if j is None else j
    if not blk.full:
        return blk.x[jj], np.ones(jj.size)
    return (np.concatenate([blk.dp[:, jj].ravel(), blk.b]),
            np.concatenate([np.ones(blk.m * jj.size), blk.pkg.p_flex_mw[:, jj].sum(axis=1)]))


def _slack_ranges(blocks: Sequence[_Block], mv_blk: _Block) -> None:
    """Each coupled area's slack-voltage change can only lie within what the MV package's
    linear model reaches from its points over the areas' bounds, and within the MV row's
    limits (exact for the linear model; keeps the LV rows and s bounds tight)."""
    mv = mv_blk.pkg
    assert isinstance(mv, SensitivityPackage)
    z = _zero_point(mv)
    lb, ub = effective_limits(mv)
    lo_box, hi_box = mv_blk.boxes()
    mid = mv.vm_pu + np.einsum("mrn,mn->mr", mv.vtdf, 0.5 * (lo_box + hi_box))
    rad = np.einsum("mrn,mn->mr", np.abs(mv.vtdf), 0.5 * (hi_box - lo_box))
    lo_v = np.maximum((mid - rad).min(axis=0), lb[:len(mv.vm_rows)])
    hi_v = np.minimum((mid + rad).max(axis=0), ub[:len(mv.vm_rows)])
    for b in blocks:
        if b.coupled and b.mv_row is not None:
            v0 = float(mv.vm_pu[z, b.mv_row]) if z is not None else 0.0
            b.dv_lo = max(float(lo_v[b.mv_row]) - v0, -S_MAX_PU)
            b.dv_hi = min(float(hi_v[b.mv_row]) - v0, S_MAX_PU)


def _lv_block(area: AreaPackage) -> _Block:
    if isinstance(area.package, HardenedPackage):
        hp = area.package
        cols = [c for c in hp.columns if c != SLACK_COLUMN]
        if set(cols) != set(area.bids.ids) or len(cols) != len(area.bids.ids):
            raise ClearingError(f"area {area.name!r}: the bids do not match the package's "
                                "columns")
        blk = _hardened(area.name, hp, area.bids.ids, area.bids.lower_mw, area.bids.upper_mw,
                        area.bids.price_eur_per_mwh, slack=SLACK_COLUMN in hp.columns)
        bids = align_bids(blk.pkg, area.bids)       # same order; island bids fixed to 0
        check_bids(blk.pkg, bids)
        _divisible(area.name, bids)
        blk.lo, blk.hi = bids.lower_mw, bids.upper_mw
        blk.weight = bids.price_eur_per_mwh * np.sign(bids.volume_mw)
        return blk
    pkg, g_v, g_l, g_off = split_slack_column(area.package)
    bids = (area.bids if area.bids.ids == pkg.columns and not pkg.undeliverable
            else align_bids(pkg, area.bids))
    check_bids(pkg, bids)
    _divisible(area.name, bids)
    weight = bids.price_eur_per_mwh * np.sign(bids.volume_mw)
    return _Block(area.name, pkg, bids.lower_mw, bids.upper_mw, weight, g_v, g_l, g_off)


def _divisible(name: str, bids: BidTable) -> None:
    if (bids.indivisible | (bids.min_mw > 0)).any():
        raise ClearingError(f"area {name!r}: indivisible bids or bids with min_mw are not "
                            "supported by the region clearing")


@dataclass
class _Model:
    """The blocks of one clearing and their coupling (fixed over the lazy rounds)."""

    request_mw: float
    blocks: list[_Block]
    mv_blk: _Block | None
    v0: FloatArray | None        # (v_mv,) the MV package's base voltages

    @property
    def all_blocks(self) -> list[_Block]:
        return self.blocks + ([self.mv_blk] if self.mv_blk is not None else [])


def _col_keys(blk: _Block) -> list[Hashable]:
    """The identities of the block's columns (:class:`LpBasis`), in column order."""
    name, ids = blk.name, blk.pkg.columns
    if not blk.full:
        return [(name, "x", c) for c in ids]
    keys: list[Hashable] = [(name, "dp", i, c) for i in range(blk.m) for c in ids]
    keys += [(name, "b", i) for i in range(blk.m)]
    if blk.coupled:
        keys += [(name, "s", i) for i in range(blk.m)]
    return keys


def _unique(keys: list[Hashable]) -> list[Hashable]:
    """``keys`` with the k-th repeat of a key (equal format-2 rows) made ``(key, k)``."""
    seen: dict[Hashable, int] = {}
    out: list[Hashable] = []
    for key in keys:
        k = seen.get(key, 0)
        seen[key] = k + 1
        out.append(key if not k else (key, k))
    return out


def _program(model: _Model) -> tuple[LinearProgram, list[Hashable], list[Hashable]]:
    """Assign columns and assemble the MILP of the blocks' current forms; with the keys of
    its columns and rows (:class:`LpBasis`)."""
    col = 0
    for blk in model.all_blocks:
        blk.col0 = col
        col += blk.width
    rows = _Rows()
    for blk in model.all_blocks:
        blk.link_row = -1
        if blk.full:
            _full_rows(rows, blk)
    terms = [_x_terms(blk) for blk in model.blocks]
    rows.add(np.concatenate([c for c, _ in terms])[None, :],
             np.concatenate([v for _, v in terms])[None, :], model.request_mw,
             model.request_mw, [("balance",)])
    mv_blk = model.mv_blk
    if mv_blk is not None:
        mv = mv_blk.pkg
        for blk in model.blocks:
            if blk.mv_col is None:
                continue
            c_mv, v_mv = _x_terms(mv_blk, np.array([blk.mv_col]))
            c_lv, v_lv = _x_terms(blk)
            rows.add(np.concatenate([c_mv, c_lv])[None, :],
                     np.concatenate([v_mv, -v_lv])[None, :], 0.0, 0.0,
                     [(blk.name, "injection")])
            if not (blk.full and blk.coupled):
                continue
            if blk.mv_sigma is not None:    # format 2: sigma_mv = sum_i (s_i + o_i b_i)
                assert blk.g_off is not None
                c_mv, v_mv = _x_terms(mv_blk, np.array([blk.mv_sigma]))
                blk.link_row = int(rows.add(
                    np.concatenate([c_mv, blk.s, blk.b])[None, :],
                    np.concatenate([v_mv, -np.ones(blk.m), -blk.g_off])[None, :], 0.0, 0.0,
                    [(blk.name, "slack-link")])[0])
                continue
            if blk.mv_row is None or model.v0 is None or not isinstance(mv,
                                                                        SensitivityPackage):
                continue
            # sum_i (s_i + o_i b_i) = sum_k (V_k,r b_k + S_k,r dP_k) - V_0,r
            r = blk.mv_row
            assert blk.g_off is not None
            cols = np.concatenate([blk.s, blk.b, mv_blk.dp.ravel(), mv_blk.b])
            vals = np.concatenate([np.ones(blk.m), blk.g_off, -mv.vtdf[:, r, :].ravel(),
                                   -mv.vm_pu[:, r]])
            blk.link_row = int(rows.add(cols[None, :], vals[None, :], -model.v0[r],
                                        -model.v0[r], [(blk.name, "slack-link")])[0])
    parts = [_columns(blk) for blk in model.all_blocks]
    lp = rows.program(np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts]),
                      np.concatenate([p[2] for p in parts]),
                      np.concatenate([p[3] for p in parts]))
    col_keys = _unique([k for blk in model.all_blocks for k in _col_keys(blk)])
    return lp, col_keys, _unique(rows.keys)


def _solve_fixed(lp: LinearProgram, col_lo: FloatArray, col_hi: FloatArray
                 ) -> tuple[FloatArray | None, float]:
    """The LP of ``lp`` with the given column bounds (every binary fixed): fixed columns
    and the rows left empty are removed before HiGHS sees it. (x, objective) or (None, inf).
    """
    free = np.flatnonzero(col_hi > col_lo)
    x = col_lo.copy()
    x[free] = 0.0
    a = lp.a.tocsc()
    shift = a @ x
    sub = a[:, free].tocsr()
    used = np.diff(sub.indptr) > 0
    empty = ~used
    if np.any(lp.row_lo[empty] - shift[empty] > 1e-9) or \
            np.any(lp.row_hi[empty] - shift[empty] < -1e-9):
        return None, np.inf
    red = LinearProgram(lp.cost[free], col_lo[free], col_hi[free], sub[used],
                        (lp.row_lo - shift)[used], (lp.row_hi - shift)[used],
                        np.zeros(free.size, np.int8))
    out = solve_highs(red)
    if out.x is None or out.status != ClearingStatus.OPTIMAL:
        return None, np.inf
    x[free] = out.x
    return x, float(lp.cost @ x)


class _Fixings:
    """The LPs of ``lp`` with some blocks at fixed points (:func:`_fix_points`), solved one
    after the other in one HiGHS instance: each starts from the last optimal basis (a move
    changes the bounds of one block's columns only; HiGHS's dual simplex goes on from
    there), the first from the LP relaxation's optimal ``basis`` (if given). Each LP may
    take :data:`BRANCH_LP_ITERATIONS` simplex iterations."""

    def __init__(self, lp: LinearProgram, basis: BasisStatus | None) -> None:
        self.lp = lp
        arr = highs_arrays(replace(lp, integrality=np.zeros_like(lp.integrality)))
        self.h = _new_highs()
        self.h.setOptionValue("presolve", "off")
        self.h.setOptionValue("simplex_iteration_limit", BRANCH_LP_ITERATIONS)
        arr.pass_to(self.h)
        self.lo, self.hi = lp.col_lo.copy(), lp.col_hi.copy()
        self.solves = 0
        self.failed = False     # an LP ended neither optimal nor infeasible
        self.good: object | None = None    # the last optimal basis (HighsBasis)
        if basis is not None:
            self.h.setBasis(highs_basis(basis))  # rejected: HiGHS starts from its own

    def solve(self, lo: FloatArray, hi: FloatArray) -> tuple[FloatArray | None, float]:
        """(x, objective) of the LP with column bounds ``lo``, ``hi``; (None, inf) if it is
        not optimal (:attr:`failed` set unless it is infeasible)."""
        moved = np.flatnonzero((lo != self.lo) | (hi != self.hi)).astype(np.int32)
        if moved.size:
            self.h.changeColsBounds(moved.size, moved, np.ascontiguousarray(lo[moved]),
                                    np.ascontiguousarray(hi[moved]))
            self.lo[moved], self.hi[moved] = lo[moved], hi[moved]
        self.h.run()
        self.solves += 1
        ms = self.h.getModelStatus()
        if ms != highspy.HighsModelStatus.kOptimal:
            self.failed |= ms != highspy.HighsModelStatus.kInfeasible
            if self.good is not None:      # the next LP from the last optimal basis
                self.h.setBasis(self.good)
            return None, np.inf
        self.good = self.h.getBasis()
        x = np.clip(np.asarray(self.h.getSolution().col_value, float), lo, hi)
        return x, float(self.lp.cost @ x)


def _fix_points(lp: LinearProgram, full: Sequence[_Block], choice: Sequence[int | None]
                ) -> tuple[FloatArray, FloatArray]:
    """Column bounds of ``lp`` with full block ``full[k]`` at point ``choice[k]`` (None:
    its binaries left as they are)."""
    lo, hi = lp.col_lo.copy(), lp.col_hi.copy()
    for b, i in zip(full, choice):
        if i is None:
            continue
        off = np.ones(b.m, bool)
        off[i] = False
        cols = [b.b[off], b.dp[off].ravel()] + ([b.s[off]] if b.coupled else [])
        c = np.concatenate(cols)
        lo[c] = hi[c] = 0.0
        lo[b.b[i]] = hi[b.b[i]] = 1.0
    return lo, hi


#: a binary within this of 0 or 1 counts as integral in the point branching
_FRAC_TOL = 1e-6
#: LPs the point branching (:func:`_branch`) may solve before it leaves the rest to HiGHS
BRANCH_LPS = 200
#: simplex iterations one of its LPs may take (a node LP from its parent's basis takes
#: tens; proving a child infeasible took 10^4 on SimBench semiurb at a binding request):
#: beyond, the branching stops and leaves the rest to HiGHS
BRANCH_LP_ITERATIONS = 2000


def _start(model: _Model, lp: LinearProgram, relaxed_x: FloatArray | None, bound: float,
           mip_rel_gap: float, *, search: bool = True, basis: BasisStatus | None = None,
           deadline: float | None = None) -> tuple[FloatArray | None, bool]:
    """An incumbent, the cheapest of these LPs with every full block at one of its points;
    True when it is the round's solution:

    1. every full block at the point nearest to its activation in the LP relaxation
       ``relaxed_x``, then at the point with the largest ``b`` there (rounding): the first
       that is within ``mip_rel_gap`` of the LP ``bound`` and feasible for the relaxed
       areas too ends the search;
    2. (``search``) :func:`_branch` from the relaxation: when it ends within
       :data:`BRANCH_LPS` LPs its incumbent is within ``mip_rel_gap`` of the optimum;
    3. every full block at its k-th point (k = 0 .. m-1, the last point for blocks with
       fewer).

    Steps 1 and 3 (and every step without ``search``, the reference) solve each LP from
    scratch without the columns that the fixed points leave at 0 (:func:`_solve_fixed`);
    step 2 solves its LPs in one HiGHS instance, each from the basis of the one before
    (:class:`_Fixings`, the first from the relaxation's ``basis``)."""
    full = [b for b in model.all_blocks if b.full]
    if not full:
        return None, False
    choices = [[min(k, b.m - 1) for b in full] for k in range(max(b.m for b in full))]
    first = 0
    if relaxed_x is not None:
        choices.insert(0, [int(np.argmax(relaxed_x[b.b])) for b in full])
        first = 1
        near = []
        for b in full:
            pf = b.pkg.p_flex_mw
            act = relaxed_x[b.b] @ pf + relaxed_x[b.dp].sum(axis=0)
            near.append(int(np.argmin(((act[None, :] - pf) ** 2).sum(axis=1))))
        if near != choices[0]:
            choices.insert(0, near)
            first = 2
    best: tuple[float, FloatArray] | None = None
    for step, choice in enumerate(choices):
        if step == first and search and relaxed_x is not None:
            inc, proven = _branch(full, lp, basis, relaxed_x, best, mip_rel_gap, deadline)
            if inc is not None:
                best = inc
                if proven:
                    return best[1], True
        x, obj = _solve_fixed(lp, *_fix_points(lp, full, choice))
        if x is None:
            continue
        if (step < first and obj - bound <= mip_rel_gap * max(abs(obj), 1.0)
                and not _selection(model, x)[1]):
            return x, True
        if best is None or obj < best[0]:
            best = (obj, x)
    return (None if best is None else best[1]), False


def _branch(full: Sequence[_Block], lp: LinearProgram, basis: BasisStatus | None,
            relaxed_x: FloatArray, incumbent: tuple[float, FloatArray] | None,
            mip_rel_gap: float, deadline: float | None = None
            ) -> tuple[tuple[float, FloatArray] | None, bool]:
    """Branch and bound over the blocks' points (step 2 of :func:`_start`). A node fixes
    some full blocks at one point each and relaxes the rest: its LP is a relaxation of
    every solution with those points. Its children fix its most fractional free block
    (the smallest largest ``b``) at each of the block's points, which covers all of them.
    Depth first, the child with the cheapest LP first (so the first leaf is a dive). A
    node whose ``b`` are all integral (within ``_FRAC_TOL``) gives an incumbent: the LP
    with every block at that point; a node is closed when its LP is infeasible or within
    ``mip_rel_gap`` of the best incumbent (``bound >= objective - mip_rel_gap
    max(|objective|, 1)``), else branched.

    Returns the best incumbent (objective, x; ``incumbent`` is the one to beat) and True
    when every node was closed: then it is within ``mip_rel_gap`` of the optimum (None: no
    combination of points is feasible). False when :data:`BRANCH_LPS` LPs or the
    ``deadline`` (``time.perf_counter``) were reached or an LP failed: the rest is left to
    HiGHS's MILP."""
    fixings = _Fixings(lp, basis)
    best = incumbent

    def closed(obj: float) -> bool:
        return best is not None and obj >= best[0] - mip_rel_gap * max(abs(best[0]), 1.0)

    def stop() -> bool:
        return (fixings.failed or fixings.solves >= BRANCH_LPS
                or (deadline is not None and time.perf_counter() >= deadline))

    stack: list[tuple[float, list[int | None], FloatArray]] = [
        (float(lp.cost @ relaxed_x), [None] * len(full), relaxed_x)]
    while stack:
        obj, fixed, x = stack.pop()
        if closed(obj):
            continue
        free = [k for k in range(len(full)) if fixed[k] is None]
        top = np.array([float(x[full[k].b].max()) for k in free])
        if not free or top.min() >= 1.0 - _FRAC_TOL:
            if stop():
                return best, False
            points = [int(np.argmax(x[b.b])) if i is None else i for b, i in zip(full, fixed)]
            xf, of = fixings.solve(*_fix_points(lp, full, points))
            if fixings.failed:
                return best, False
            if xf is not None and (best is None or of < best[0]):
                best = (of, xf)
            if not free or closed(obj):
                continue       # else the fixed points cost more than the node's bound
        k = free[int(np.argmin(top))]
        children: list[tuple[float, list[int | None], FloatArray]] = []
        for i in range(full[k].m):
            if stop():
                return best, False
            trial = list(fixed)
            trial[k] = i
            xi, oi = fixings.solve(*_fix_points(lp, full, trial))
            if xi is not None and not closed(oi):
                children.append((oi, trial, xi))
        if fixings.failed:
            return best, False
        children.sort(key=lambda c: -c[0])     # the cheapest on top of the stack
        stack.extend(children)
    return best, True


def _mv_slack(model: _Model, x: FloatArray) -> tuple[int | None, FloatArray | None]:
    """The selected MV point and the predicted MV voltage change (per MV vm row), as the
    slack link rows compute it: ``sum_k V_k b_k + S_k dP_k - V_0`` (also for an LP
    relaxation's fractional ``b``); format 2: (point, None)."""
    mv_blk = model.mv_blk
    if mv_blk is None:
        return None, None
    mv = mv_blk.pkg
    if model.v0 is None or not isinstance(mv, SensitivityPackage):
        return int(np.argmax(x[mv_blk.b])), None
    dv = mv.vm_pu.T @ x[mv_blk.b] + np.einsum("mrn,mn->r", mv.vtdf, x[mv_blk.dp]) - model.v0
    return int(np.argmax(x[mv_blk.b])), dv


def _slack_of(model: _Model, x: FloatArray, dv_mv: FloatArray | None, blk: _Block) -> float:
    """The slack-voltage change the MV package gives a relaxed coupled area in ``x``; 0 (the
    base set point, within every point's range) when its link is not published."""
    if dv_mv is not None and blk.mv_row is not None:
        return float(dv_mv[blk.mv_row])
    if model.mv_blk is not None and blk.mv_sigma is not None:
        c, v = _x_terms(model.mv_blk, np.array([blk.mv_sigma]))
        return float(x[c] @ v)
    return 0.0


def _relaxed_point(blk: _Block, act: FloatArray, dv: float) -> int | None:
    """A point whose region holds ``act`` and whose rows (and slack range) hold there, the
    nearest first; None if there is none: the relaxed block's optimum is not feasible."""
    pf = blk.pkg.p_flex_mw
    dist = np.einsum("mn,mn->m", act[None, :] - pf, act[None, :] - pf)
    s_lo, s_hi = blk.s_range()
    for i in np.argsort(dist, kind="stable"):
        if dist[i] > dist.min() + _VORONOI_TOL * (1 + dist.min()):
            break
        s = dv - (float(blk.g_off[i]) if blk.g_off is not None else 0.0)
        if blk.coupled and not s_lo[i] - _CHECK_TOL <= s <= s_hi[i] + _CHECK_TOL:
            continue
        pred = blk.base[i] + blk.sens[i] @ (act - pf[i])
        if blk.g is not None:
            pred = pred + blk.g[i] * s
        ok = (pred <= blk.ub + _CHECK_TOL * (1 + np.abs(blk.ub))) & \
             (pred >= blk.lb - _CHECK_TOL * (1 + np.abs(blk.lb)))
        if blk.own is not None:
            ok |= ~blk.own[i]
        if isinstance(blk.pkg, HardenedPackage) and int(i) in blk.pkg.excluded:
            continue
        if ok.all():
            return int(i)
    return None


def _selection(model: _Model, x: FloatArray
               ) -> tuple[dict[str, tuple[int, FloatArray, float]], list[_Block]]:
    """Per LV block its point, activation and slack change ``s`` (relative to the point's
    offset) in solution ``x``; and the relaxed blocks whose optimum is not feasible."""
    _, dv_mv = _mv_slack(model, x)
    out: dict[str, tuple[int, FloatArray, float]] = {}
    bad: list[_Block] = []
    for blk in model.blocks:
        pf = blk.pkg.p_flex_mw
        if blk.full:
            i = int(np.argmax(x[blk.b]))
            out[blk.name] = (i, pf[i] + x[blk.dp[i]],
                             float(x[blk.s[i]]) if blk.coupled else 0.0)
            continue
        act = np.clip(x[blk.x], blk.lo, blk.hi)
        dv = _slack_of(model, x, dv_mv, blk) if blk.coupled else 0.0
        pt = _relaxed_point(blk, act, dv)
        if pt is None:
            bad.append(blk)
            continue
        off = float(blk.g_off[pt]) if blk.g_off is not None else 0.0
        out[blk.name] = (pt, act, dv - off if blk.coupled else 0.0)
    return out, bad


def _hardened_mv(areas: Sequence[AreaPackage], blocks: list[_Block], mv: HardenedPackage
                 ) -> _Block:
    """The block of a format-2 MV package: columns = the areas' injections (``mv_column``)
    and the published links' slack changes (``mv_slack_column``, bounded by
    :data:`S_MAX_PU`), in the order of ``areas`` (not the MV DSO's shuffle)."""
    inj = [a.mv_column for a in areas if a.mv_column is not None]
    sig = [a.mv_slack_column for a in areas if a.mv_slack_column is not None]
    if set(mv.columns) != set(inj) | set(sig) or len(mv.columns) != len(inj) + len(sig):
        raise ClearingError("the MV package's columns must be the areas' mv_column and "
                            "mv_slack_column")
    by_col = {a.mv_column: b for a, b in zip(areas, blocks)}
    lo = np.r_[[by_col[c].lo.sum() for c in inj], np.full(len(sig), -S_MAX_PU)]
    hi = np.r_[[by_col[c].hi.sum() for c in inj], np.full(len(sig), S_MAX_PU)]
    mv_blk = _hardened("mv", mv, [str(c) for c in inj + sig], lo, hi, np.zeros(len(lo)),
                       slack=False)
    pos = {c: k for k, c in enumerate(inj + sig)}
    for a, b in zip(areas, blocks):
        if a.mv_column is None:
            b.g_v = b.g_l = b.g_off = None
            b.k_slack = None
            continue
        b.mv_col = pos[a.mv_column]
        if a.mv_slack_column is not None and b.coupled:
            b.mv_sigma = pos[a.mv_slack_column]
    return mv_blk


def _setup(areas: Sequence[AreaPackage], request_mw: float, mv: AnyPackage | None,
           *, prefilter: bool) -> _Model:
    names = [a.name for a in areas]
    if len(set(names)) != len(names):
        raise ClearingError("area names must be unique")
    for p in [a.package for a in areas] + [mv]:
        if isinstance(p, HardenedPackage):   # rows published for one request only
            p.check_request(request_mw)
    blocks = [_lv_block(a) for a in areas]
    mv_blk: _Block | None = None
    v0: FloatArray | None = None
    if isinstance(mv, HardenedPackage):
        mv_blk = _hardened_mv(areas, blocks, mv)
        _prepare(mv_blk, prefilter=prefilter)
    elif mv is not None:
        if set(mv.columns) != {a.mv_column for a in areas if a.mv_column is not None}:
            raise ClearingError("the MV package's columns must be the areas' mv_column")
        z = _zero_point(mv)
        if z is None:
            raise ClearingError("the MV package needs a point with activation fraction 0")
        v0 = mv.vm_pu[z].copy()
        by_col = {a.mv_column: b for a, b in zip(areas, blocks)}
        lo = np.array([by_col[c].lo.sum() for c in mv.columns])
        hi = np.array([by_col[c].hi.sum() for c in mv.columns])
        mv_blk = _Block("mv", mv, lo, hi, np.zeros(mv.n), None, None)
        for a, b in zip(areas, blocks):
            if a.mv_column is None:
                b.g_v = b.g_l = b.g_off = None
                continue
            b.mv_col = mv.columns.index(a.mv_column)
            if b.coupled:
                if a.mv_slack_row is None or a.mv_slack_row not in mv.vm_rows:
                    raise ClearingError(f"area {a.name!r}: mv_slack_row {a.mv_slack_row!r} "
                                        "is not a voltage row of the MV package")
                b.mv_row = mv.vm_rows.index(a.mv_slack_row)
        _slack_ranges(blocks, mv_blk)
        _prepare(mv_blk, prefilter=prefilter)
    else:
        for b in blocks:       # no MV package: nothing to couple to
            b.g_v = b.g_l = b.g_off = None
            b.k_slack = None
    for b in blocks:
        _prepare(b, prefilter=prefilter)
    return _Model(float(request_mw), blocks, mv_blk, v0)


@dataclass
class _LpState:
    """The warm start carried from LP relaxation to LP relaxation, and their figures."""

    basis: LpBasis | None = None
    enabled: bool = True       # False: every LP relaxation from scratch, no basis kept
    relaxations: int = 0
    iterations: int = 0
    time_s: float = 0.0
    warm_started: int = 0
    warm_rejected: int = 0


#: the warm start of a refinement round / next frame (module doc "Warm start"): a block
#: full in the last LP relaxation takes its statuses from that LP only, and new columns
#: start at 0 on the side their reduced costs press them to (:func:`_crash`); False: as
#: before (statuses merged over the last two LPs, new columns at their lower bound or
#: upper box row), the reference of ``bench.bench_region_lpwarm``
ROUND_WARM_START = True

#: an LP relaxation with at least this many rows (the region's, once areas are full) that
#: the simplex does not solve from the last basis within :data:`WARM_LP_ITERATIONS`
#: iterations is solved from scratch by the interior point method
#: (:attr:`flexcore.market.direct.LpMethod.IPM`). After a refinement round or a new frame
#: every coefficient has moved and the last basis can be far from the optimum: on 25 LPs of
#: 11-15k rows of a SimBench semiurb window the warm simplex took 300-32,000 iterations
#: (201 s in all, up to 27 s each), the IPM 2.5-6.3 s each (99 s); the window's 32
#: clearings replayed side by side: LP time 195 -> 103 s, clearing 214 -> 122 s, the same
#: costs (``bench.bench_region_replay --compare lpmethod``)
IPM_ROWS = 5000
WARM_LP_ITERATIONS = 1000


def _places(model: _Model, x: FloatArray) -> dict[str, BlockPlace]:
    """Per block where it stands in ``x`` (:class:`BlockPlace`)."""
    out: dict[str, BlockPlace] = {}
    for blk in model.all_blocks:
        ids = tuple(blk.pkg.columns)
        if not blk.full:
            out[blk.name] = BlockPlace(ids, x[blk.x].copy())
            continue
        b = x[blk.b].copy()
        pf = blk.pkg.p_flex_mw.copy()
        out[blk.name] = BlockPlace(ids, pf.T @ b + x[blk.dp].sum(axis=0), pf, b)
    return out


def _activation(place: BlockPlace, ids: Sequence[str]) -> FloatArray | None:
    """``place``'s activation in the column order ``ids`` (None: a column is missing)."""
    if place.columns == tuple(ids):
        return place.activation_mw
    where = {c: k for k, c in enumerate(place.columns)}
    if any(c not in where for c in ids):
        return None
    return place.activation_mw[np.array([where[c] for c in ids], np.int64)]


def _block_rows(row_keys: Sequence[Hashable]) -> dict[str, list[int]]:
    """Per block name the indices of its rows (keys ``(name, kind, ...)``, or such a key
    with the repeat count of :func:`_unique`)."""
    out: dict[str, list[int]] = {}
    for r, key in enumerate(row_keys):
        k = key[0] if isinstance(key, tuple) and len(key) == 2 and \
            isinstance(key[0], tuple) else key
        if isinstance(k, tuple) and len(k) >= 2 and isinstance(k[0], str):
            out.setdefault(k[0], []).append(r)
    return out


def _warm_basis(model: _Model, lp: LinearProgram, col_keys: Sequence[Hashable],
                row_keys: Sequence[Hashable], warm: LpBasis) -> BasisStatus:
    """``warm`` mapped onto the current model by key: kept columns and rows keep their
    status (a block that was full in the last LP relaxation: only its keys of that LP, with
    :data:`ROUND_WARM_START`; the LP before may have held a point of the same index that
    is another point now, e.g. the last frame's refinement point, and its basic columns
    there make the basis singular); the new columns of full blocks are placed by
    :func:`_crash`; the rest is left to :func:`flexcore.market.direct.complete_basis` (new
    rows basic, new columns at a bound, the count of basic variables repaired)."""
    col = np.array([warm.col_status.get(k, BASIS_NEW) for k in col_keys], np.int8)
    row = np.array([warm.row_status.get(k, BASIS_NEW) for k in row_keys], np.int8)
    rows_of = _block_rows(row_keys) if ROUND_WARM_START else {}
    for blk in model.all_blocks:
        if not blk.full:
            continue
        place = warm.places.get(blk.name)
        if ROUND_WARM_START and place is not None and place.b is not None:
            cols = range(blk.col0, blk.col0 + blk.width)
            col[cols] = [warm.last_cols.get(col_keys[j], BASIS_NEW) for j in cols]
            rows = rows_of.get(blk.name, [])
            row[rows] = [warm.last_rows.get(row_keys[r], BASIS_NEW) for r in rows]
        cols_all = np.concatenate([blk.dp.ravel(), blk.b] + ([blk.s] if blk.coupled else []))
        if (col[cols_all] == BASIS_NEW).any():
            _crash(blk, lp, col, row, warm)
    return BasisStatus(col, row)


def _crash(blk: _Block, lp: LinearProgram, col: npt.NDArray[np.int8],
           row: npt.NDArray[np.int8], warm: LpBasis) -> None:
    """Statuses for the new columns of a full block (in place), consistent with the old
    solution: a block that was relaxed sits at the point nearest to its old activation
    (``b_i = 1`` at its upper bound, ``dP_i`` where the old ``x`` was: at the same bound,
    or basic with its box row tight, or basic where ``x`` was basic); every other new
    ``dP_ij`` / ``s_i`` is 0 (:func:`_zero`, :func:`_zero_s`), pressed (with
    :data:`ROUND_WARM_START`) to the side the old basis holds the bid at at the block's
    other points, else the side of its old activation (the sign of its reduced cost), so
    the count of basic variables balances and the reduced costs keep their signs."""
    name, ids = blk.name, blk.pkg.columns
    place = warm.places.get(name)
    act = None if place is None else _activation(place, ids)
    side = np.zeros(blk.n, np.int64)
    side_s = 0
    if act is not None:
        act = np.clip(act, blk.lo, blk.hi)
        if ROUND_WARM_START:
            side = _side(act, blk.lo, blk.hi)
    if act is not None and place is not None and place.b is None \
            and (col[blk.b] == BASIS_NEW).all():          # was relaxed
        star = _nearest(blk, lp, act)
        was_basic = np.array([warm.col_status.get((name, "x", k)) == BASIS_BASIC
                              for k in ids], bool)
        _place(blk, lp, col, row, star, act, side, was_basic)
    elif ROUND_WARM_START:
        press, side_s = _signs(blk, lp, col, row)
        side = np.where(press != 0, press, side)
    col[blk.b[col[blk.b] == BASIS_NEW]] = BASIS_LOWER
    for i in range(blk.m):
        new = col[blk.dp[i]] == BASIS_NEW
        if new.any():
            _zero(blk, lp, col, row, i, side, new)
    if blk.coupled:
        _zero_s(blk, lp, col, row, np.flatnonzero(col[blk.s] == BASIS_NEW), side_s)


def _side(act: FloatArray, lo: FloatArray, hi: FloatArray) -> IntArray:
    """Per bid +1 at its upper bound, -1 at its lower bound, 0 strictly between."""
    at_hi = np.abs(act - hi) <= 1e-9 * (1 + np.abs(hi))
    at_lo = np.abs(act - lo) <= 1e-9 * (1 + np.abs(lo))
    return np.where(at_hi & ~at_lo, 1, np.where(at_lo & ~at_hi, -1, 0)).astype(np.int64)


def _signs(blk: _Block, lp: LinearProgram, col: npt.NDArray[np.int8],
           row: npt.NDArray[np.int8]) -> tuple[IntArray, int]:
    """Per bid, the side the basis holds it at 0 at the block's points that have statuses
    (+1: its upper box row tight or its column at its upper bound 0, -1: down; the
    majority over those points, 0: none), i.e. the sign of the bid's reduced cost; and
    the same for ``s``."""
    lo, hi = lp.col_lo, lp.col_hi
    vote = np.zeros(blk.n, np.int64)
    vote_s = 0
    for i in range(blk.m):
        c, r_hi, r_lo = blk.dp[i], blk.box_hi_row[i], blk.box_lo_row[i]
        if (col[c] == BASIS_NEW).all():
            continue
        up = ((r_hi >= 0) & (row[r_hi] == BASIS_UPPER)) | ((col[c] == BASIS_UPPER)
                                                            & (hi[c] == 0.0))
        down = ((r_lo >= 0) & (row[r_lo] == BASIS_LOWER)) | ((col[c] == BASIS_LOWER)
                                                              & (lo[c] == 0.0))
        vote += up.astype(np.int64) - down.astype(np.int64)
        if blk.coupled:
            rh, rl, cs = blk.s_hi_row[i], blk.s_lo_row[i], blk.s[i]
            vote_s += int((rh >= 0 and row[rh] == BASIS_UPPER)
                          or (col[cs] == BASIS_UPPER and hi[cs] == 0.0))
            vote_s -= int((rl >= 0 and row[rl] == BASIS_LOWER)
                          or (col[cs] == BASIS_LOWER and lo[cs] == 0.0))
    return np.sign(vote).astype(np.int64), int(np.sign(vote_s))


def _nearest(blk: _Block, lp: LinearProgram, act: FloatArray) -> int:
    """The point nearest to the activation ``act`` (of those that can be selected)."""
    pf = blk.pkg.p_flex_mw
    dist = np.einsum("mn,mn->m", act[None, :] - pf, act[None, :] - pf)
    dist[lp.col_hi[blk.b] <= lp.col_lo[blk.b]] = np.inf          # points never selected
    return int(np.argmin(dist))


def _place(blk: _Block, lp: LinearProgram, col: npt.NDArray[np.int8],
           row: npt.NDArray[np.int8], star: int, act: FloatArray, side: IntArray,
           was_basic: npt.NDArray[np.bool_]) -> None:
    """Point ``star`` selected with activation ``act``: ``b`` at its upper bound, each
    ``dP`` at the bound ``act`` is at, else basic (with its box row tight where ``act`` is
    at the bid bound ``side`` says, basic where the old ``x`` was), ``s`` basic."""
    lo, hi = lp.col_lo, lp.col_hi
    col[blk.b] = BASIS_LOWER
    col[blk.b[star]] = BASIS_UPPER
    c = blk.dp[star]
    v = act - blk.pkg.p_flex_mw[star]
    st = np.where(np.abs(v - lo[c]) <= 1e-9 * (1 + np.abs(lo[c])), BASIS_LOWER,
                  np.where(np.abs(v - hi[c]) <= 1e-9 * (1 + np.abs(hi[c])), BASIS_UPPER,
                           BASIS_BASIC))
    st[was_basic] = BASIS_BASIC
    col[c] = st
    r_hi, r_lo = blk.box_hi_row[star], blk.box_lo_row[star]
    pinned = (st == BASIS_BASIC) & ~was_basic
    t_hi = pinned & (side > 0) & (r_hi >= 0)
    t_lo = pinned & (side < 0) & (r_lo >= 0)
    row[r_hi[t_hi]] = BASIS_UPPER
    row[r_lo[t_lo]] = BASIS_LOWER
    if blk.coupled:
        col[blk.s[star]] = BASIS_BASIC
        if blk.link_row >= 0 and row[blk.link_row] == BASIS_NEW:
            row[blk.link_row] = BASIS_LOWER


def _zero(blk: _Block, lp: LinearProgram, col: npt.NDArray[np.int8],
          row: npt.NDArray[np.int8], i: int, side: IntArray,
          which: npt.NDArray[np.bool_]) -> None:
    """``dP_ij = 0`` for the bids ``which`` of point i (new columns, ``b_i = 0``): pressed
    to ``side`` (+1 up, -1 down) at the column bound 0 on that side, else basic with the
    box row on that side tight; ``side`` 0: at the lower bound if it is 0, else the upper
    if it is 0, else basic with the upper (else the lower) box row tight."""
    lo, hi = lp.col_lo, lp.col_hi
    c, r_hi, r_lo = blk.dp[i], blk.box_hi_row[i], blk.box_lo_row[i]
    z_lo, z_hi = lo[c] == 0.0, hi[c] == 0.0
    up = np.where(side > 0, r_hi >= 0, np.where(side < 0, False, ~z_lo & ~z_hi & (r_hi >= 0)))
    down = np.where(side < 0, r_lo >= 0, np.where(side > 0, False,
                                                    ~z_lo & ~z_hi & ~up & (r_lo >= 0)))
    at_hi = ~up & ~down & z_hi & ((side > 0) | ~z_lo)
    at_lo = ~up & ~down & ~at_hi & z_lo
    col[c[which]] = np.where(at_lo, BASIS_LOWER, np.where(at_hi, BASIS_UPPER,
                                                          BASIS_BASIC))[which]
    for r, t, tight_st in ((r_hi, up, BASIS_UPPER), (r_lo, down, BASIS_LOWER)):
        new = which & t & (r >= 0) & (row[r] == BASIS_NEW)
        row[r[new]] = tight_st


def _zero_s(blk: _Block, lp: LinearProgram, col: npt.NDArray[np.int8],
            row: npt.NDArray[np.int8], pts: IntArray, side: int = 0) -> None:
    """``s_i = 0`` for the new points ``pts``: at its bound when 0 is one, else basic with
    the range row on the side ``side`` tight (+1 or 0: the upper one if there is one)."""
    if not pts.size:
        return
    c = blk.s[pts]
    lo, hi = lp.col_lo[c], lp.col_hi[c]
    r_hi, r_lo = blk.s_hi_row[pts], blk.s_lo_row[pts]
    basic = (lo != 0.0) & (hi != 0.0)
    col[c] = np.where(lo == 0.0, BASIS_LOWER, np.where(hi == 0.0, BASIS_UPPER, BASIS_BASIC))
    first, second = ((r_lo, BASIS_LOWER), (r_hi, BASIS_UPPER)) if side < 0 else \
        ((r_hi, BASIS_UPPER), (r_lo, BASIS_LOWER))
    t1 = basic & (first[0] >= 0) & (row[first[0]] == BASIS_NEW)
    row[first[0][t1]] = first[1]
    t2 = basic & ~t1 & (second[0] >= 0) & (row[second[0]] == BASIS_NEW)
    row[second[0][t2]] = second[1]


def _integral(model: _Model, x: FloatArray) -> bool:
    b = np.concatenate([blk.b for blk in model.all_blocks if blk.full] + [np.zeros(0, int)])
    return bool(np.all(np.minimum(x[b], 1.0 - x[b]) <= 1e-9))


class _RowAdding:
    """An LP with some of its rows left out, to which the violated ones are added batch by
    batch in one HiGHS instance (``addRows``: the new rows basic), each solve going on from
    the last optimal basis by the dual simplex."""

    def __init__(self, lp: LinearProgram, a: sp.csr_matrix, rows: IntArray,
                 basis: BasisStatus) -> None:
        self.lp, self.a = lp, a
        self.rows = rows.copy()      # the rows HiGHS holds, in its order
        sub = replace(lp, a=a[rows], row_lo=lp.row_lo[rows], row_hi=lp.row_hi[rows])
        self.h = _new_highs()
        self.h.setOptionValue("presolve", "off")
        highs_arrays(sub).pass_to(self.h)
        self.h.setBasis(highs_basis(complete_basis(basis, sub)))

    def add(self, rows: IntArray, time_limit_s: float | None) -> tuple[FloatArray | None, int]:
        """Add ``rows`` (indices into ``lp``) and solve: the optimum (None: not optimal) and
        the simplex iterations."""
        new = self.a[rows]
        new.sort_indices()
        self.h.addRows(len(rows), np.ascontiguousarray(self.lp.row_lo[rows]),
                       np.ascontiguousarray(self.lp.row_hi[rows]), int(new.nnz),
                       new.indptr[:-1].astype(np.int32), new.indices.astype(np.int32),
                       np.ascontiguousarray(new.data, float))
        self.rows = np.concatenate([self.rows, rows])
        if time_limit_s is not None:
            self.h.setOptionValue("time_limit", float(max(time_limit_s, 1e-3)))
        self.h.run()
        its = max(int(self.h.getInfo().simplex_iteration_count), 0)
        if self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None, its
        return np.clip(np.asarray(self.h.getSolution().col_value, float), self.lp.col_lo,
                       self.lp.col_hi), its

    def basis(self) -> BasisStatus:
        """The last optimal basis (its rows those of :attr:`rows`)."""
        return basis_of(self.h)


def _large_relaxation(model: _Model, lp: LinearProgram, row_keys: Sequence[Hashable],
                      basis: BasisStatus | None, lps: _LpState,
                      left: Callable[[], float | None], *, lazy: bool
                      ) -> tuple[HighsOutcome, frozenset[Hashable]]:
    """A large LP relaxation ``lp``: first from ``basis`` for at most
    :data:`WARM_LP_ITERATIONS` simplex iterations, else by the interior point method. With
    ``lazy`` (module doc "Lazy bid boxes") without the bid-box rows of its full blocks but,
    from ``basis``, those the last LP relaxation ended with (:attr:`LpBasis.box_rows`) and
    those ``basis`` holds tight, and by the interior point method without any; then the
    violated ones are added until none is (:class:`_RowAdding`). Returns its outcome over
    all rows (the omitted rows basic) and the keys of the box rows it ended with (none
    without ``lazy``)."""
    t0 = time.perf_counter()
    a = lp.a.tocsr()
    box = np.concatenate([np.concatenate([blk.box_hi_row.ravel(), blk.box_lo_row.ravel()])
                          for blk in model.all_blocks if blk.full] + [np.zeros(0, np.int64)])
    box = box[box >= 0]
    omitted = np.zeros(a.shape[0], bool)
    omitted[box] = lazy
    if lps.enabled and lps.basis is not None:
        kept = lps.basis.box_rows
        omitted[[r for r in box.tolist() if row_keys[r] in kept]] = False
    if basis is not None:
        omitted &= np.isin(basis.row, (BASIS_BASIC, BASIS_NEW))
    iterations = 0

    def solve(start: BasisStatus | None) -> HighsOutcome:
        """The LP over the rows not omitted: from ``start`` (then no cold solve if it takes
        more than WARM_LP_ITERATIONS) or by the interior point method."""
        nonlocal iterations
        on = np.flatnonzero(~omitted)
        got = solve_highs(replace(lp, a=a[on], row_lo=lp.row_lo[on], row_hi=lp.row_hi[on]),
                          time_limit_s=left(), want_basis=True,
                          basis=None if start is None else BasisStatus(start.col,
                                                                       start.row[on]),
                          warm_iterations=WARM_LP_ITERATIONS,
                          cold=None if start is not None else LpMethod.IPM)
        iterations += got.iterations
        return got

    warm: bool | None = None
    out = None if basis is None else solve(basis)
    if out is not None:
        warm = out.x is not None
    if out is None or out.x is None:
        omitted[box] = lazy        # far from the optimum: no box row to start with
        out = solve(None)
    held = np.flatnonzero(~omitted)     # the rows of the last solve, in its order
    adding: _RowAdding | None = None
    while True:
        if out.x is None or out.basis is None or out.status != ClearingStatus.OPTIMAL:
            return replace(out, basis=None, iterations=iterations,
                           solve_time_s=time.perf_counter() - t0,
                           warm_started=warm), frozenset()
        act = a @ out.x
        tol = _CHECK_TOL * (1.0 + np.abs(act))
        viol = np.flatnonzero(omitted & ((act > lp.row_hi + tol) | (act < lp.row_lo - tol)))
        if not viol.size:
            break
        if adding is None:
            adding = _RowAdding(lp, a, held, out.basis)
        omitted[viol] = False
        x, its = adding.add(viol, left())
        iterations += its
        if x is None:     # not optimal from there (numerics, time): the IPM on these rows
            adding, out = None, solve(None)
            held = np.flatnonzero(~omitted)
            continue
        held = adding.rows
        out = replace(out, x=x, basis=adding.basis())
    row = np.full(a.shape[0], BASIS_BASIC, np.int8)
    row[held] = out.basis.row
    keys = frozenset(row_keys[r] for r in box.tolist() if lazy and not omitted[r])
    return replace(out, objective=float(lp.cost @ out.x), row_activity=act,
                   iterations=iterations, solve_time_s=time.perf_counter() - t0,
                   warm_started=warm,
                   basis=BasisStatus(out.basis.col, row) if lps.enabled else None), keys


def _lazy_round(model: _Model, fixed: Mapping[str, int], times: dict[str, float],
                t0: float, lps: _LpState, *, mip_rel_gap: float, time_limit_s: float | None,
                mip_start: bool, incumbent_search: bool = True,
                ipm_rows: int | None = None, lazy_boxes: bool = False
                ) -> tuple[FloatArray | None, float, RegionClearing]:
    """One round over the current blocks: the LP relaxation first (its optimum, if
    integral, or the incumbent, if within ``mip_rel_gap`` of its bound, is the round's
    solution), else the MILP. Returns the solution (None: none), its objective (nan when it
    is only the relaxation's, whose relaxed areas are to be made full) and the result shell.
    The LP relaxation starts from ``lps.basis`` (if any) and leaves its own there; with at
    least ``ipm_rows`` rows (None: never) for at most :data:`WARM_LP_ITERATIONS`
    iterations, else it is solved from scratch by the interior point method, and with
    ``lazy_boxes`` without the box rows it does not need (:func:`_large_relaxation`).
    """
    t1 = time.perf_counter()
    lp, col_keys, row_keys = _program(model)
    by_name = {b.name: b for b in model.all_blocks}
    for name, point in fixed.items():
        fb = by_name[name]
        lp.col_lo[fb.b] = lp.col_hi[fb.b] = 0.0
        lp.col_lo[fb.b[point]] = lp.col_hi[fb.b[point]] = 1.0
    t2 = time.perf_counter()
    times["build"] += t2 - t1
    shell = RegionClearing(ClearingStatus.OPTIMAL, "", model.request_mw,
                           columns=lp.a.shape[1], rows=lp.a.shape[0],
                           binaries=int(lp.integrality.sum()))

    def left() -> float | None:
        return None if time_limit_s is None else time_limit_s - (time.perf_counter() - t0)

    relax_lp = replace(lp, integrality=np.zeros_like(lp.integrality))
    t3 = time.perf_counter()
    basis = (None if lps.basis is None or not lps.enabled else
             _warm_basis(model, relax_lp, col_keys, row_keys, lps.basis))
    times["build"] += time.perf_counter() - t3
    large = ipm_rows is not None and relax_lp.a.shape[0] >= ipm_rows
    box_keys: frozenset[Hashable] = frozenset()
    if large:
        relax, box_keys = _large_relaxation(model, relax_lp, row_keys, basis, lps, left,
                                            lazy=lazy_boxes)
    else:
        relax = solve_highs(relax_lp, time_limit_s=left(), basis=basis, want_basis=lps.enabled)
    times["solve"] += relax.solve_time_s
    lps.relaxations += 1
    lps.iterations += relax.iterations
    lps.time_s += relax.solve_time_s
    lps.warm_started += relax.warm_started is True
    lps.warm_rejected += relax.warm_started is False
    if relax.basis is not None and relax.x is not None:
        lps.basis = LpBasis.of(col_keys, row_keys, relax.basis, relax.x, lps.basis, model,
                               box_keys)
    if relax.x is None or relax.objective is None or relax.status != ClearingStatus.OPTIMAL:
        shell.status = (ClearingStatus.INFEASIBLE if relax.status == ClearingStatus.INFEASIBLE
                        else ClearingStatus.ERROR)
        shell.message = f"LP relaxation: {relax.message or relax.status.value}"
        return None, np.nan, shell
    if _integral(model, relax.x):
        return relax.x, relax.objective, shell
    if _selection(model, relax.x)[1]:       # relaxed areas to make full: check this first
        return relax.x, np.nan, shell
    start = None
    if mip_start and not fixed:
        t3 = time.perf_counter()
        start, done = _start(model, lp, relax.x, relax.objective, mip_rel_gap,
                             search=incumbent_search, basis=relax.basis,
                             deadline=None if time_limit_s is None else t0 + time_limit_s)
        times["start"] += time.perf_counter() - t3
        if start is not None and done:
            shell.message = (f"incumbent within mip_rel_gap of the optimum (LP bound "
                             f"{relax.objective:.6g})")
            return start, float(lp.cost @ start), shell
    out = solve_highs(lp, mip_rel_gap=mip_rel_gap, time_limit_s=left(), start=start)
    times["solve"] += out.solve_time_s
    shell.status, shell.message = out.status, out.message
    if out.x is None or out.objective is None or not out.status.has_solution:
        return None, np.nan, shell
    return out.x, out.objective, shell


def clear_region(areas: Sequence[AreaPackage], request_mw: float, *,
                 mv: AnyPackage | None = None,
                 fixed_points: Mapping[str, int] | None = None, prefilter: bool = True,
                 lazy: bool = True, mip_rel_gap: float = 1e-6,
                 time_limit_s: float | None = None, mip_start: bool = True,
                 warm_full: Collection[str] = (),
                 warm: RegionClearing | LpBasis | None = None,
                 lp_warm_start: bool = True, incumbent_search: bool = True,
                 ipm_rows: int | None = IPM_ROWS, lazy_boxes: bool = True) -> RegionClearing:
    """Clear ``request_mw`` over every area's bids at least cost (``sum c_j |x_j|``).

    ``mv`` (the MV DSO's package, columns = the areas' ``mv_column``) couples the areas:
    its rows bind the areas' net injections and its slack-voltage predictions enter the LV
    rows of areas whose package has the :data:`SLACK_COLUMN`. ``fixed_points`` (``{area
    name or "mv": point}``) fixes regions (then the problem is an LP): the enumeration
    oracle. Every package is checked against its bids (:func:`check_bids`).

    ``prefilter``: leave out row sides that cannot reach a limit, and keep areas none of
    whose rows can reach one relaxed (their regions do not matter). ``lazy``: start with
    every area relaxed and make full only the areas whose relaxed optimum is infeasible
    for them, re-solving until none is (module doc "Lazy areas"; exact). ``mip_start``:
    the incumbent LPs (module doc): they end a round when within ``mip_rel_gap`` of the LP
    bound, else the best is HiGHS's MIP start (on SimBench semiurb HiGHS otherwise found
    no feasible point in 150 s). Without it every round solves the MILP.
    ``incumbent_search`` (with ``mip_start``): before the MILP, the branching over points
    (module doc); False: the incumbent LPs alone, then the MILP (the reference).

    ``warm_full`` (with ``lazy``): names of areas to start in the full form, e.g. the
    previous clearing's :attr:`RegionClearing.full_names` (the next refinement round, the
    next frame): the lazy rounds that would make them full one by one are skipped. Exact
    whatever the names (the lazy check still runs; an unknown name or an area that cannot
    bind is ignored); the optimum is the same, and when the names are the areas the cold
    start ends with, the last round's model and solution are the same too.

    ``warm``: a previous clearing (or its :attr:`RegionClearing.lp_basis`) whose last LP
    relaxation's optimal basis the first LP relaxation starts from (module doc "Warm
    start"); each later round starts from the round before anyway. The same optimum: a
    basis HiGHS rejects, or that does not lead to an optimal end, is dropped for a cold
    solve. ``lp_warm_start=False``: every LP relaxation from scratch (``warm`` ignored, no
    basis kept), the reference. ``ipm_rows``: an LP relaxation with at least this many
    rows gets :data:`WARM_LP_ITERATIONS` simplex iterations from the basis, else it is
    solved from scratch by the interior point method (:data:`IPM_ROWS`; None: the simplex
    alone, the reference). ``lazy_boxes``: such an LP relaxation leaves out the bid-box rows
    it does not need (module doc "Lazy bid boxes"; False: every row, the reference). The
    same optimum either way."""
    t0 = time.perf_counter()
    if not np.isfinite(request_mw):
        raise ClearingError(f"request_mw must be finite, got {request_mw!r}")
    model = _setup(areas, request_mw, mv, prefilter=prefilter)
    by_name = {b.name: b for b in model.all_blocks}
    for name, point in (fixed_points or {}).items():
        if name not in by_name or not 0 <= point < by_name[name].m:
            raise ClearingError(f"fixed_points: no area {name!r} with point {point}")
    fixed = dict(fixed_points or {})
    start_full = set(warm_full) if lazy else set()
    for b in model.blocks:
        b.full = b.name in fixed or (not lazy and b.bindable) or (b.name in start_full
                                                                  and b.bindable)
    t_build = time.perf_counter() - t0
    times = {"build": t_build, "start": 0.0, "solve": 0.0}
    lps = _LpState(warm.lp_basis if isinstance(warm, RegionClearing) else warm,
                   enabled=lp_warm_start)
    rounds = 0
    while True:
        rounds += 1
        x, obj, res = _lazy_round(model, fixed, times, t0, lps, mip_rel_gap=mip_rel_gap,
                                  time_limit_s=time_limit_s, mip_start=mip_start,
                                  incumbent_search=incumbent_search, ipm_rows=ipm_rows,
                                  lazy_boxes=lazy_boxes)
        res.lp_relaxations, res.lp_iterations = lps.relaxations, lps.iterations
        res.lp_time_s, res.lp_basis = lps.time_s, lps.basis
        res.lp_warm_started, res.lp_warm_rejected = lps.warm_started, lps.warm_rejected
        res.request_mw = float(request_mw)
        res.lazy_rounds = rounds
        res.full_areas = sum(b.full for b in model.blocks)
        res.full_names = tuple(b.name for b in model.blocks if b.full)
        res.build_time_s, res.start_time_s = times["build"], times["start"]
        res.solve_time_s = times["solve"]
        if x is None:
            return res
        sel, bad = _selection(model, x)
        if not bad:
            break
        if res.status != ClearingStatus.OPTIMAL:
            res.status = ClearingStatus.ERROR      # out of time, and not feasible yet
            res.message = f"{res.message}; {len(bad)} relaxed area(s) not yet feasible"
            return res
        for b in bad:
            b.full = True
    res.cost_eur_per_h = obj
    for b in model.blocks:
        i, act, ds = sel[b.name]
        res.points[b.name] = i
        res.activation_mw[b.name] = act
        res.slack_dv_pu[b.name] = ds + (float(b.g_off[i]) if b.g_off is not None else 0.0)
        if not isinstance(b.pkg, SensitivityPackage):
            continue        # format 2: only the DSO can predict its rows
        vm, ld = b.pkg.predict(i, act)
        if b.coupled:
            vm = vm + b.g_v[i] * ds                    # type: ignore[index]
            ld = ld + b.g_l[i] * ds                    # type: ignore[index]
        res.predicted_vm_pu[b.name] = vm
        res.predicted_loading_percent[b.name] = ld
    if model.mv_blk is not None:
        k, _ = _mv_slack(model, x)
        assert k is not None
        res.mv_point = k
        mvp = model.mv_blk.pkg
        if isinstance(mvp, SensitivityPackage):
            res.mv_predicted_vm_pu, res.mv_predicted_loading_percent = mvp.predict(
                k, mvp.p_flex_mw[k] + x[model.mv_blk.dp[k]])
    return res


def enumerate_regions(areas: Sequence[AreaPackage], request_mw: float, *,
                      mv: AnyPackage | None = None, **options: object
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
