"""The clearing MILP as sparse matrices, solved by HiGHS through highspy (no modelling layer).

Two exact formulations of docs/method.md "The clearing MILP as implemented":

``"milp"``
    the full MILP (14a-j) with one binary ``b_i`` per operating point, variables
    ``[dP (m*n) | b (m) | u (k) | t (m*n, proximity only)]``.
``"regions"``
    one problem per operating point ``i`` with ``b_i = 1`` fixed (then ``dP_k = 0`` for
    ``k != i``), in the activation ``x = P_flex,i + dP_i`` directly; the best feasible region
    is the MILP optimum. Without per-bid binaries every region is an LP, which is much
    faster than the MILP; with semi-continuous/indivisible bids each region is a small MILP
    (only the per-bid binaries), still ~15x faster than the full MILP on 241 bids.
    ``"auto"`` = ``"regions"``.

Rows that cannot bind are dropped before building (``prefilter``): for point ``i`` and row
``r``, the exact range of ``S_r dP_i`` over the bid box ``P_LB - P_flex,i <= dP_i <= P_UB -
P_flex,i`` is ``S_r c +- |S_r| h`` (centre ``c``, half width ``h``); a row whose whole range
stays inside its limits is redundant for the linear model, also in the LP relaxation, so the
optimum is unchanged.

A format-2 package (:class:`~flexcore.exchange.hardened.HardenedPackage`, privacy
``"exact"``) enters as one RowBlock per point with ``sens = a``, ``base = 0``,
``lb = -inf`` and ``ub = rhs - a · P_flex,i`` in the ``dP`` variables (``a x <= rhs`` on
the activation); its excluded points are never selected (``b_i = 0``) and its clearings
carry no predictions (they are the DSO's, from its private format-1 package).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError, ClearingResult
from flexcore.exchange.enums import ClearingStatus, Objective, PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import BoolArray, FloatArray, IntArray
from flexcore.exchange.package import SensitivityPackage

#: what the market clears: format 1 (research, ``allow_full``) or format 2
AnyPackage = SensitivityPackage | HardenedPackage

METHODS = ("auto", "regions", "milp")
INF = highspy.kHighsInf
_ROW_TOL = 1e-9


# --------------------------------------------------------------------------- preparation
def align_bids(package: AnyPackage, bids: BidTable) -> BidTable:
    """The bids reordered like ``package.columns``; raises ClearingError naming mismatches."""
    have, want = set(bids.ids), set(package.columns)
    missing = [c for c in package.columns if c not in have]
    extra = [b for b in bids.ids if b not in want]
    if missing or extra:
        raise ClearingError(
            f"bid ids do not match the package columns: {len(missing)} column(s) without a bid "
            f"{missing[:5]}, {len(extra)} bid(s) without a column {extra[:5]}")
    out = bids.subset(package.columns)
    off = getattr(package, "undeliverable", ())
    if off:  # bids on an island (package field): the DSO cannot deliver them, fixed to 0
        mask = np.isin(np.array(out.ids, dtype=object), list(off))
        out = replace(out, volume_mw=np.where(mask, 0.0, out.volume_mw),
                      min_mw=np.where(mask, 0.0, out.min_mw))
    return out


@dataclass
class RowBlock:
    """The voltage/loading rows of one operating point kept for the model."""

    rows: IntArray      # global row index (into Prepared.row_keys)
    sens: FloatArray    # (r, n) VTDF/LTDF rows (format 2: the published a)
    base: FloatArray    # (r,) V_i / L_i (format 2: 0)
    lb: FloatArray      # (r,) lower limit (format 2: -inf)
    ub: FloatArray      # (r,) upper limit (format 2: rhs - a · P_flex,i)
    is_vm: BoolArray    # (r,)


@dataclass
class Prepared:
    """Numeric data of one clearing, columns ordered like ``package.columns``."""

    package: AnyPackage
    bids: BidTable
    request_mw: float
    objective: Objective
    proximity_weight: float
    lower: FloatArray       # P_LB
    upper: FloatArray       # P_UB
    sign: FloatArray        # sign(P_M)
    weight: FloatArray      # objective coefficient of x
    binary: IntArray        # indices of bids needing a binary u_j
    min_mag: FloatArray     # (k,) minimum |x_j| when on
    max_mag: FloatArray     # (k,) |P_M,j|
    row_keys: tuple[str, ...]
    blocks: list[RowBlock]
    excluded: tuple[int, ...] = ()   # points whose region is never selected

    @property
    def hardened(self) -> bool:
        return isinstance(self.package, HardenedPackage)

    @property
    def m(self) -> int:
        return self.package.m

    @property
    def n(self) -> int:
        return self.package.n

    @property
    def proximity(self) -> bool:
        return self.objective == Objective.ABS_COST_PROXIMITY

    def box(self, i: int) -> tuple[FloatArray, FloatArray]:
        """Bounds of dP_i when region i is selected."""
        pf = self.package.p_flex_mw[i]
        return self.lower - pf, self.upper - pf


def _keep_rows(sens: FloatArray, base: FloatArray, lb: float | FloatArray,
               ub: float | FloatArray, lo: FloatArray, hi: FloatArray) -> BoolArray:
    """Rows whose exact range over the box ``lo <= dP <= hi`` touches a (finite) limit."""
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    mid, rad = sens @ centre, np.abs(sens) @ half
    ub_a = np.broadcast_to(np.asarray(ub, float), base.shape)
    lb_a = np.broadcast_to(np.asarray(lb, float), base.shape)
    fin_u, fin_l = np.isfinite(ub_a), np.isfinite(lb_a)
    tol_u = _ROW_TOL * (1 + np.abs(np.where(fin_u, ub_a, 0.0)))
    tol_l = _ROW_TOL * (1 + np.abs(np.where(fin_l, lb_a, 0.0)))
    keep: BoolArray = ((fin_u & (base + mid + rad >= np.where(fin_u, ub_a, 0.0) - tol_u))
                       | (fin_l & (base + mid - rad <= np.where(fin_l, lb_a, 0.0) + tol_l)))
    return keep


def _hardened_blocks(package: HardenedPackage, bids: BidTable, *, prefilter: bool
                     ) -> tuple[list[RowBlock], tuple[str, ...]]:
    """Format 2: published rows ``a x <= rhs`` as blocks in dP; keys ``"<label>#<k>"``."""
    blocks, keys = [], []
    offset = 0
    for i, (a, rhs) in enumerate(zip(package.rows_a, package.rows_rhs)):
        pf = package.p_flex_mw[i]
        r = len(rhs)
        base, lb, ub = np.zeros(r), np.full(r, -INF), rhs - a @ pf
        keep = (_keep_rows(a, base, lb, ub, bids.lower_mw - pf, bids.upper_mw - pf)
                if prefilter else np.ones(r, bool))
        idx = np.flatnonzero(keep)
        blocks.append(RowBlock(idx + offset, a[idx], base[idx], lb[idx], ub[idx],
                               np.zeros(idx.size, bool)))
        keys += [f"{package.points[i].label}#{k}" for k in range(r)]
        offset += r
    return blocks, tuple(keys)


def prepare(package: AnyPackage, bids: BidTable, request_mw: float, *,
            objective: Objective | str = Objective.ABS_COST, proximity_weight: float = 1e-3,
            prefilter: bool = True) -> Prepared:
    """Align bids, compute bounds and objective weights, keep the rows that can bind.

    ``objective`` may be given as its string; an unknown one raises ClearingError naming
    the choices."""
    try:
        obj = Objective.parse(objective, where="objective")
    except FlexcosimError as exc:
        raise ClearingError(str(exc)) from None
    if not np.isfinite(request_mw):
        raise ClearingError(f"request_mw must be finite, got {request_mw!r}")
    bids = align_bids(package, bids)
    vol = bids.volume_mw
    sign = np.sign(vol)
    price = bids.price_eur_per_mwh
    weight = price * sign if obj != Objective.SIGNED_COST else price.copy()
    need = (bids.indivisible | (bids.min_mw > 0)) & (vol != 0)
    binary = np.flatnonzero(need)
    max_mag = np.abs(vol[binary])
    min_mag = np.where(bids.indivisible[binary], max_mag, bids.min_mw[binary])
    common: dict[str, Any] = dict(
        package=package, bids=bids, request_mw=float(request_mw), objective=obj,
        proximity_weight=float(proximity_weight), lower=bids.lower_mw, upper=bids.upper_mw,
        sign=sign, weight=weight, binary=binary, min_mag=min_mag, max_mag=max_mag)
    if isinstance(package, HardenedPackage):
        if package.privacy == PrivacyLevel.ENVELOPE:
            raise ClearingError("an envelope package is cleared by "
                                "flexcore.market.envelope.clear_envelope (clear() dispatches)")
        hblocks, keys = _hardened_blocks(package, bids, prefilter=prefilter)
        return Prepared(**common, row_keys=keys, blocks=hblocks, excluded=package.excluded)
    lim = package.limits
    v = len(package.vm_rows)
    blocks = []
    for i in range(package.m):
        lo, hi = bids.lower_mw - package.p_flex_mw[i], bids.upper_mw - package.p_flex_mw[i]
        parts = []
        for sens, base, lb, ub, offset, is_vm in (
                (package.vtdf[i], package.vm_pu[i], lim.vm_min_pu, lim.vm_max_pu, 0, True),
                (package.ltdf[i], package.loading_percent[i], lim.loading_min_percent,
                 lim.loading_max_percent, v, False)):
            keep = (_keep_rows(sens, base, lb, ub, lo, hi) if prefilter
                    else np.ones(len(base), bool))
            idx = np.flatnonzero(keep)
            parts.append((idx + offset, sens[idx], base[idx], np.full(idx.size, lb),
                          np.full(idx.size, ub), np.full(idx.size, is_vm)))
        blocks.append(RowBlock(*(np.concatenate([p[k] for p in parts]) for k in range(6))))
    return Prepared(**common, row_keys=tuple(package.vm_rows) + tuple(package.loading_rows),
                    blocks=blocks)


# --------------------------------------------------------------------------- HiGHS
@dataclass
class LinearProgram:
    """``min cost^T x  s.t.  row_lo <= A x <= row_hi, col_lo <= x <= col_hi``."""

    cost: FloatArray
    col_lo: FloatArray
    col_hi: FloatArray
    a: sp.csr_matrix
    row_lo: FloatArray
    row_hi: FloatArray
    integrality: npt.NDArray[np.int8]  # 0 continuous, 1 integer


@dataclass
class HighsOutcome:
    """One HiGHS solve: ``x`` is set when a solution exists, ``row_activity`` too except on
    the region fast path of :func:`_solve_regions` (which does not read it)."""

    status: ClearingStatus
    message: str
    x: FloatArray | None
    row_activity: FloatArray | None
    objective: float | None
    solve_time_s: float
    #: HiGHS stopped at its time limit (kTimeLimit), with or without a solution
    time_limit_hit: bool = False
    #: simplex iterations (HiGHS info ``simplex_iteration_count``; a cold fallback included)
    iterations: int = 0
    #: the optimal basis over the full columns and rows (``want_basis`` and an LP only)
    basis: BasisStatus | None = None
    #: a basis was given: whether HiGHS solved from it (False: rejected or not optimal
    #: from it, then solved cold); None: no basis given
    warm_started: bool | None = None


#: HiGHS basis statuses (``highspy.HighsBasisStatus`` as ints)
BASIS_LOWER, BASIS_BASIC, BASIS_UPPER, BASIS_ZERO = 0, 1, 2, 3
#: no status (a column or row new since the basis was taken): :func:`complete_basis` makes
#: a new row basic and a new column nonbasic at its bound nearest to 0
BASIS_NEW = -1


@dataclass
class BasisStatus:
    """A simplex basis of a :class:`LinearProgram`: one status per column and per row."""

    col: npt.NDArray[np.int8]
    row: npt.NDArray[np.int8]


def _nearest_zero_bound(lo: FloatArray, hi: FloatArray) -> npt.NDArray[np.int8]:
    """Nonbasic status at the bound nearest to 0 (free: zero)."""
    fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
    at_hi = fin_hi & (~fin_lo | (np.abs(hi) < np.abs(np.where(fin_lo, lo, 0.0))))
    out = np.where(at_hi, BASIS_UPPER, BASIS_LOWER).astype(np.int8)
    out[~fin_lo & ~fin_hi] = BASIS_ZERO
    return out


def complete_basis(basis: BasisStatus, lp: LinearProgram) -> BasisStatus:
    """A basis HiGHS accepts as it is: new rows (:data:`BASIS_NEW`) basic, new columns
    nonbasic at their bound nearest to 0, nonbasic statuses moved off infinite bounds, and
    exactly one basic variable per row: surplus basic rows (then columns) are made
    nonbasic, the last first, a deficit is filled with nonbasic rows, the last first (a
    logical keeps the basis matrix nonsingular more often than a structural; HiGHS
    replaces a singular basis's dependent columns by logicals itself)."""
    col = np.asarray(basis.col, np.int8).copy()
    row = np.asarray(basis.row, np.int8).copy()
    row[row == BASIS_NEW] = BASIS_BASIC
    for st, lo, hi in ((col, lp.col_lo, lp.col_hi), (row, lp.row_lo, lp.row_hi)):
        near = _nearest_zero_bound(lo, hi)
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        bad = ((st == BASIS_NEW) | ((st == BASIS_LOWER) & ~fin_lo)
               | ((st == BASIS_UPPER) & ~fin_hi) | ((st == BASIS_ZERO) & (fin_lo | fin_hi))
               | (st > BASIS_ZERO) | (st < BASIS_NEW))
        st[bad] = near[bad]
    surplus = int((col == BASIS_BASIC).sum() + (row == BASIS_BASIC).sum()) - len(row)
    if surplus > 0:
        for st, lo, hi in ((row, lp.row_lo, lp.row_hi), (col, lp.col_lo, lp.col_hi)):
            idx = np.flatnonzero(st == BASIS_BASIC)[::-1][:surplus]
            st[idx] = _nearest_zero_bound(lo[idx], hi[idx])
            surplus -= idx.size
    elif surplus < 0:
        idx = np.flatnonzero(row != BASIS_BASIC)[::-1][:-surplus]
        row[idx] = BASIS_BASIC
    return BasisStatus(col, row)


@dataclass
class Solution:
    """The selected region and activation of a solve (before :func:`make_result`)."""

    status: ClearingStatus
    message: str
    point: int | None
    x: FloatArray | None
    objective: float | None
    build_time_s: float
    solve_time_s: float


def highs_basis(basis: BasisStatus) -> Any:
    """``basis`` as a ``highspy.HighsBasis`` (not alien: made consistent by
    :func:`complete_basis`, HiGHS checks the count)."""
    hb = highspy.HighsBasis()
    hb.alien = False
    status = [highspy.HighsBasisStatus(k) for k in range(4)]
    hb.col_status = [status[k] for k in np.asarray(basis.col).tolist()]
    hb.row_status = [status[k] for k in np.asarray(basis.row).tolist()]
    return hb


def basis_of(h: Any) -> BasisStatus:
    """HiGHS's current basis (``h.getBasis()``) as a :class:`BasisStatus`."""
    hb = h.getBasis()
    return BasisStatus(np.array([int(k) for k in hb.col_status], np.int8),
                       np.array([int(k) for k in hb.row_status], np.int8))


def _new_highs() -> Any:
    core = getattr(highspy, "_core", None)
    h = core._Highs() if core is not None and hasattr(core, "_Highs") else highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


@dataclass
class HighsArrays:
    """Exactly what :func:`solve_highs` passes to ``Highs.passModel`` (row-wise CSR)."""

    cost: FloatArray
    col_lo: FloatArray
    col_hi: FloatArray
    row_lo: FloatArray
    row_hi: FloatArray
    start: npt.NDArray[np.int32]      # CSR row starts (nrow + 1)
    index: npt.NDArray[np.int32]      # column of each entry, sorted within a row
    value: FloatArray
    integrality: npt.NDArray[np.int32]

    def pass_to(self, h: Any) -> Any:
        """``h.passModel`` of these arrays (minimise); returns HiGHS's status."""
        return h.passModel(len(self.cost), len(self.row_lo), int(self.start[-1]),
                           int(highspy.MatrixFormat.kRowwise), int(highspy.ObjSense.kMinimize),
                           0.0, self.cost, self.col_lo, self.col_hi, self.row_lo, self.row_hi,
                           self.start, self.index, self.value, self.integrality)


def highs_arrays(lp: LinearProgram) -> HighsArrays:
    """The passModel arrays of ``lp`` (its columns fixed by their bounds already dropped)."""
    a = lp.a.tocsr()
    a.sort_indices()
    return HighsArrays(np.ascontiguousarray(lp.cost, float),
                       np.ascontiguousarray(lp.col_lo, float),
                       np.ascontiguousarray(lp.col_hi, float),
                       np.ascontiguousarray(lp.row_lo, float),
                       np.ascontiguousarray(lp.row_hi, float), a.indptr.astype(np.int32),
                       a.indices.astype(np.int32), a.data.astype(float),
                       lp.integrality.astype(np.int32))


class LpMethod(StrEnum):
    """How HiGHS solves an LP from scratch (:func:`solve_highs`, ``cold``)."""

    #: the dual simplex without presolve (on the small dense LPs of one district, HiGHS's
    #: presolve cost ~5x the simplex itself)
    SIMPLEX = "simplex"
    #: the interior point method (IPX) with presolve and crossover (an optimal vertex and
    #: its basis, as the simplex gives): on the region's LP relaxations (11-15k rows,
    #: sparse, degenerate) 2.5-6.3 s each, without the dual simplex's 10-30k-iteration
    #: outliers from the last basis (``bench.bench_region_replay --compare lpmethod``)
    IPM = "ipm"


def solve_highs(lp: LinearProgram, *, mip_rel_gap: float = 1e-6, time_limit_s: float | None = None,
                start: FloatArray | None = None, threads: int | None = None,
                basis: BasisStatus | None = None, want_basis: bool = False,
                warm_iterations: int | None = None,
                cold: LpMethod | None = LpMethod.SIMPLEX) -> HighsOutcome:
    """Pass ``lp`` to HiGHS in one call (row-wise CSR) and solve it.

    An LP only: ``basis`` (statuses over ``lp``'s columns and rows, :data:`BASIS_NEW`
    allowed; :func:`complete_basis`) is HiGHS's starting basis; if HiGHS rejects it, ends
    other than optimal from it or needs more than ``warm_iterations`` simplex iterations
    from it (None: no limit; a basis far from the optimum), the LP is solved again from
    scratch (the outcome says which: ``warm_started``), by ``cold``, as is an LP without a
    basis; ``cold=None``: not solved again (the outcome has no ``x``: the caller decides
    what to solve instead). ``want_basis``: return the optimal basis (the columns fixed by
    their bounds, which HiGHS never sees, as nonbasic at the lower bound)."""
    t0 = time.perf_counter()
    full = lp
    lp, free = _drop_fixed_columns(lp)
    if not len(free):  # nothing to decide: feasible iff every row admits the fixed values
        ok = bool(np.all(lp.row_lo <= 1e-9) and np.all(lp.row_hi >= -1e-9))
        x0 = full.col_lo.copy()
        return (HighsOutcome(ClearingStatus.OPTIMAL, "", x0, full.a @ x0, float(full.cost @ x0),
                             time.perf_counter() - t0) if ok else
                HighsOutcome(ClearingStatus.INFEASIBLE, "infeasible (every column is fixed)",
                             None, None, None, time.perf_counter() - t0))
    lp_only = not lp.integrality.any()
    sub = None
    if basis is not None and lp_only:
        sub = complete_basis(BasisStatus(np.asarray(basis.col)[free], basis.row), lp)
    arr = highs_arrays(lp)
    method = (cold or LpMethod.SIMPLEX) if lp_only else LpMethod.SIMPLEX
    out = _run_highs(arr, full.cost, full.col_lo, free, full.a, t0=t0,
                     mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s, start=start,
                     threads=threads, basis=sub, want_basis=want_basis and lp_only,
                     method=LpMethod.SIMPLEX if sub is not None else method,
                     iteration_limit=warm_iterations if sub is not None else None)
    if sub is not None and out.warm_started is False and cold is not None:  # the same answer
        left = None if time_limit_s is None else time_limit_s - (time.perf_counter() - t0)
        again = _run_highs(arr, full.cost, full.col_lo, free, full.a, t0=t0,
                           mip_rel_gap=mip_rel_gap, time_limit_s=left, start=start,
                           threads=threads, want_basis=want_basis, method=method)
        out = replace(again, iterations=again.iterations + out.iterations, warm_started=False)
    if out.basis is not None:
        col = np.full(len(full.cost), BASIS_LOWER, np.int8)
        col[free] = out.basis.col
        out.basis = BasisStatus(col, out.basis.row)
    return out


def _run_highs(arr: HighsArrays, full_cost: FloatArray, full_col_lo: FloatArray,
               free: IntArray, full_a: sp.csr_matrix | None, *, t0: float, mip_rel_gap: float,
               time_limit_s: float | None, start: FloatArray | None = None,
               threads: int | None = None, basis: BasisStatus | None = None,
               want_basis: bool = False, method: LpMethod = LpMethod.SIMPLEX,
               iteration_limit: int | None = None) -> HighsOutcome:
    """Solve the passModel arrays; ``x`` is mapped back onto the full columns (``free``);
    ``row_activity`` is ``full_a @ x`` (None without ``full_a``). ``basis``: a complete
    basis of these arrays to start from (then ``warm_started`` is False if HiGHS rejected
    it or did not end optimal from it within ``iteration_limit`` simplex iterations: the
    caller solves again without it). An LP is solved by ``method`` (:class:`LpMethod`)."""
    h = _new_highs()
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    if not arr.integrality.any():
        if method == LpMethod.IPM:
            h.setOptionValue("solver", "ipm")
        else:
            h.setOptionValue("presolve", "off")
    if iteration_limit is not None:
        h.setOptionValue("simplex_iteration_limit", int(iteration_limit))
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(max(time_limit_s, 1e-3)))
    if threads is not None:
        h.setOptionValue("threads", int(threads))
    ncol = len(arr.cost)
    if arr.pass_to(h) == highspy.HighsStatus.kError:
        return HighsOutcome(ClearingStatus.ERROR, "HiGHS rejected the model (passModel)", None,
                            None, None, time.perf_counter() - t0)
    if start is not None:
        h.setSolution(ncol, np.arange(ncol, dtype=np.int32), np.asarray(start, float)[free])
    warm: bool | None = None
    if basis is not None:
        warm = h.setBasis(highs_basis(basis)) == highspy.HighsStatus.kOk
        if not warm:
            return HighsOutcome(ClearingStatus.ERROR, "HiGHS rejected the basis", None, None,
                                None, time.perf_counter() - t0, warm_started=False)
    h.run()
    ms = h.getModelStatus()
    MS = highspy.HighsModelStatus
    info = h.getInfo()
    iterations = max(int(info.simplex_iteration_count), 0)
    if warm and ms != MS.kOptimal:
        return HighsOutcome(ClearingStatus.ERROR, "not optimal from the basis (HiGHS status "
                            f"{h.modelStatusToString(ms)})", None, None, None,
                            time.perf_counter() - t0, iterations=iterations,
                            warm_started=False)
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x: FloatArray | None = None
    act: FloatArray | None = None
    obj: float | None = None
    if has_sol:
        sol = h.getSolution()
        x = full_col_lo.copy()
        x[free] = sol.col_value
        act = None if full_a is None else full_a @ x
        obj = float(full_cost @ x)
    dt = time.perf_counter() - t0
    if ms == MS.kOptimal:
        got: BasisStatus | None = None
        if want_basis:
            got = basis_of(h)
        return HighsOutcome(ClearingStatus.OPTIMAL, "", x, act, obj, dt, iterations=iterations,
                            basis=got, warm_started=warm)
    if ms in (MS.kInfeasible, MS.kUnboundedOrInfeasible):
        return HighsOutcome(ClearingStatus.INFEASIBLE, "HiGHS: infeasible", None, None, None, dt)
    if ms == MS.kTimeLimit:
        if has_sol:
            return HighsOutcome(ClearingStatus.TIME_LIMIT, "time limit reached with a feasible "
                                f"solution (mip gap {info.mip_gap:.3g})", x, act, obj, dt,
                                time_limit_hit=True)
        return HighsOutcome(ClearingStatus.ERROR, "time limit reached without a feasible "
                            "solution", None, None, None, dt, time_limit_hit=True)
    # every other status is a failure, never a time limit: name what HiGHS said
    name = h.modelStatusToString(ms)
    if ms == MS.kUnbounded:
        why = f"unbounded (HiGHS status {name}): a column without a bound"
    elif ms in (MS.kIterationLimit, MS.kSolutionLimit, MS.kMemoryLimit):
        why = f"solver limit reached (HiGHS status {name})"
    elif ms in (MS.kInterrupt, getattr(MS, "kHighsInterrupt", MS.kInterrupt)):
        why = f"interrupted (HiGHS status {name})"
    elif ms in (MS.kLoadError, MS.kModelError, MS.kModelEmpty):
        why = f"model rejected (HiGHS status {name})"
    else:  # kUnknown, kSolveError, kPresolveError, kPostsolveError, kNotset, ...
        why = (f"numerical difficulties (HiGHS status {name}): check the magnitudes of "
               "prices, volumes and sensitivities")
    return HighsOutcome(ClearingStatus.ERROR, why, None, None, None, dt)


def _drop_fixed_columns(lp: LinearProgram) -> tuple[LinearProgram, IntArray]:
    """``lp`` without the columns fixed by their bounds (bids without volume this frame),
    their contribution moved into the row bounds; returns it and the kept column indices."""
    free = np.flatnonzero(lp.col_hi > lp.col_lo)
    if len(free) == len(lp.cost):
        return lp, free
    x_fixed = lp.col_lo.copy()
    x_fixed[free] = 0.0
    a = lp.a.tocsr()
    shift = a @ x_fixed
    return LinearProgram(lp.cost[free], lp.col_lo[free], lp.col_hi[free], a[:, free],
                         lp.row_lo - shift, lp.row_hi - shift, lp.integrality[free]), free


def _csr(dense: FloatArray, ncol: int, col_offset: int = 0) -> sp.csr_matrix:
    """Dense block placed at ``col_offset`` in a CSR matrix with ``ncol`` columns."""
    r, c = dense.shape
    return sp.csr_matrix((dense.ravel(), np.tile(np.arange(c) + col_offset, r),
                          np.arange(0, r * c + 1, c)), shape=(r, ncol))


def _coo(rows: npt.ArrayLike, cols: npt.ArrayLike, vals: npt.ArrayLike,
         shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.asarray(vals, float), (np.asarray(rows), np.asarray(cols))),
                         shape=shape)


# --------------------------------------------------------------------------- regions
def region_program(p: Prepared, i: int, *, cost: FloatArray | None = None,
                   balance: bool = True) -> tuple[LinearProgram, int]:
    """Region ``i`` (``b_i = 1``) in the activation ``x``; returns the program and the number
    of voltage/loading rows, which come first. Columns ``[x (n) | u (k) | t (n, proximity)]``.
    """
    n, k, m = p.n, len(p.binary), p.m
    pf_all = p.package.p_flex_mw
    pf = pf_all[i]
    prox = p.proximity and cost is None
    ncol = n + k + (n if prox else 0)
    blk = p.blocks[i]
    shift = blk.sens @ pf
    d = pf[None, :] - np.delete(pf_all, i, axis=0)          # (m-1, n): P_i - P_j
    dense = np.vstack([blk.sens, d, np.ones((1, n))]) if balance else np.vstack([blk.sens, d])
    lo: list[npt.ArrayLike] = [blk.lb - blk.base + shift,
                               d @ pf - 0.5 * np.einsum("jn,jn->j", d, d)]
    hi: list[npt.ArrayLike] = [blk.ub - blk.base + shift, np.full(m - 1, INF)]
    if balance:
        lo.append([p.request_mw])
        hi.append([p.request_mw])
    mats = [_csr(dense, ncol)]
    if k:
        r = np.arange(k)
        bj = p.binary
        mats.append(_coo(np.r_[r, r], np.r_[bj, n + r], np.r_[p.sign[bj], -p.min_mag],
                         (k, ncol)))
        mats.append(_coo(np.r_[r, r], np.r_[bj, n + r], np.r_[p.sign[bj], -p.max_mag],
                         (k, ncol)))
        lo += [np.zeros(k), np.full(k, -INF)]
        hi += [np.full(k, INF), np.zeros(k)]
    if prox:
        r = np.arange(n)
        t = n + k + r
        mats.append(_coo(np.r_[r, r], np.r_[t, r], np.r_[np.ones(n), -np.ones(n)], (n, ncol)))
        mats.append(_coo(np.r_[r, r], np.r_[t, r], np.ones(2 * n), (n, ncol)))
        lo += [-pf, pf]
        hi += [np.full(n, INF), np.full(n, INF)]
    c = np.zeros(ncol)
    c[:n] = p.weight if cost is None else cost
    if prox:
        c[n + k:] = p.proximity_weight
    col_lo = np.r_[p.lower, np.zeros(k), np.zeros(n if prox else 0)]
    col_hi = np.r_[p.upper, np.ones(k), np.full(n if prox else 0, INF)]
    integ = np.r_[np.zeros(n), np.ones(k), np.zeros(n if prox else 0)].astype(np.int8)
    a = mats[0] if len(mats) == 1 else sp.vstack(mats, format="csr")
    lp = LinearProgram(c, col_lo, col_hi, a,
                       np.concatenate([np.asarray(v, float) for v in lo]),
                       np.concatenate([np.asarray(v, float) for v in hi]), integ)
    return lp, len(blk.rows)


class RegionArrays:
    """The HiGHS arrays of every region of one clearing (``b_i = 1``, full cost, balance row),
    built from pieces shared by all regions: the same arrays that ``highs_arrays`` makes of
    :func:`region_program` after ``_drop_fixed_columns``, without the sparse-matrix detour.

    :meth:`arrays` returns None when the shortcut does not apply exactly (a column fixed at
    a non-zero value, a non-finite coefficient on a fixed column, or no bid with volume); the
    caller then takes the general path.
    """

    def __init__(self, p: Prepared) -> None:
        self.p = p
        n, k = p.n, len(p.binary)
        prox = p.proximity
        nt = n if prox else 0
        self.ncol = n + k + nt
        self.cost = np.zeros(self.ncol)
        self.cost[:n] = p.weight
        if prox:
            self.cost[n + k:] = p.proximity_weight
        self.col_lo = np.r_[p.lower, np.zeros(k), np.zeros(nt)]
        self.col_hi = np.r_[p.upper, np.ones(k), np.full(nt, INF)]
        integ = np.r_[np.zeros(n), np.ones(k), np.zeros(nt)].astype(np.int8)
        self.free = np.flatnonzero(self.col_hi > self.col_lo)
        fixed_x = np.flatnonzero(~(p.upper > p.lower))
        self.fixed_x = fixed_x
        # a column fixed at 0 shifts no row bound (exactly: a @ x_fixed is +0.0)
        self.exact = bool(np.all(self.col_lo[fixed_x] == 0.0)) and len(self.free) > 0
        fx = np.flatnonzero(p.upper > p.lower)
        self.fx = fx
        nf = len(fx)
        self.nf = nf
        self.exact = self.exact and nf > 0
        newpos = np.full(self.ncol, -1, np.int64)
        newpos[self.free] = np.arange(len(self.free))
        self.r_cost = np.ascontiguousarray(self.cost[self.free], float)
        self.r_col_lo = np.ascontiguousarray(self.col_lo[self.free], float)
        self.r_col_hi = np.ascontiguousarray(self.col_hi[self.free], float)
        self.r_integ = integ[self.free].astype(np.int32)
        # rows after the dense block, the same for every region: [min size | max size | prox]
        counts: list[IntArray] = []
        idx: list[IntArray] = []
        val: list[FloatArray] = []
        if k:
            bj = p.binary
            for mag in (p.min_mag, p.max_mag):
                pairs_c = np.stack([newpos[bj], newpos[n + np.arange(k)]], axis=1)
                pairs_v = np.stack([p.sign[bj], -mag], axis=1).astype(float)
                ok = pairs_c >= 0
                counts.append(ok.sum(axis=1))
                idx.append(pairs_c[ok])
                val.append(pairs_v[ok])
        if prox:
            for x_val in (-1.0, 1.0):
                pairs_c = np.stack([newpos[np.arange(n)], newpos[n + k + np.arange(n)]], axis=1)
                pairs_v = np.stack([np.full(n, x_val), np.ones(n)], axis=1)
                ok = pairs_c >= 0
                counts.append(ok.sum(axis=1))
                idx.append(pairs_c[ok])
                val.append(pairs_v[ok])
        # CSR pieces of those rows: starts after the dense block's last entry, columns, values
        self.tail_start = np.cumsum(np.concatenate(counts)) if counts else np.zeros(0, np.int64)
        self.tail_index = (np.concatenate(idx) if idx else np.zeros(0)).astype(np.int32)
        self.tail_value = (np.concatenate(val) if val else np.zeros(0)).astype(float)
        lo_t: list[FloatArray] = []
        hi_t: list[FloatArray] = []
        if k:
            lo_t += [np.zeros(k), np.full(k, -INF)]
            hi_t += [np.full(k, INF), np.zeros(k)]
        self.k_lo, self.k_hi = lo_t, hi_t

    def arrays(self, i: int) -> HighsArrays | None:
        """Region ``i`` as passModel arrays (None: use region_program + solve_highs)."""
        if not self.exact:
            return None
        p = self.p
        n, m = p.n, p.m
        pf_all = p.package.p_flex_mw
        pf = pf_all[i]
        blk = p.blocks[i]
        fixed = self.fixed_x
        # (m-1, n): P_i - P_j, the very expression of region_program (the memory order of
        # the result, hence the summation order of d @ pf, follows that of p_flex_mw)
        d = pf[None, :] - np.delete(pf_all, i, axis=0)
        if len(fixed) and not (np.all(np.isfinite(blk.sens[:, fixed]))
                               and np.all(np.isfinite(d[:, fixed]))):
            return None
        shift = blk.sens @ pf
        lo: list[npt.ArrayLike] = [blk.lb - blk.base + shift,
                                   d @ pf - 0.5 * np.einsum("jn,jn->j", d, d), [p.request_mw]]
        hi: list[npt.ArrayLike] = [blk.ub - blk.base + shift, np.full(m - 1, INF),
                                   [p.request_mw]]
        lo += self.k_lo
        hi += self.k_hi
        if p.proximity:
            lo += [-pf, pf]
            hi += [np.full(n, INF), np.full(n, INF)]
        fx = self.fx
        nf = self.nf
        nr = len(blk.rows)
        nd = nr + m                                     # voltage/loading, Voronoi, balance
        value = np.empty(nd * nf + len(self.tail_value))
        body = value[:nd * nf].reshape(nd, nf)
        np.take(blk.sens, fx, axis=1, out=body[:nr], mode="clip")
        np.take(d, fx, axis=1, out=body[nr:nd - 1], mode="clip")
        body[nd - 1] = 1.0
        value[nd * nf:] = self.tail_value
        start = np.concatenate([np.arange(0, nd * nf + 1, nf, dtype=np.int32),
                                (nd * nf + self.tail_start).astype(np.int32)])
        index = np.concatenate([np.tile(np.arange(nf, dtype=np.int32), nd), self.tail_index])
        return HighsArrays(self.r_cost, self.r_col_lo, self.r_col_hi,
                           np.ascontiguousarray(np.concatenate(
                               [np.asarray(v, float) for v in lo]), float),
                           np.ascontiguousarray(np.concatenate(
                               [np.asarray(v, float) for v in hi]), float),
                           start, index, value, self.r_integ)


class RegionCache:
    """The region solves of the last clearing, for the next clearing of the same frame
    (TSO-side; e.g. after the DSO added rows to one point of a format-2 package, every
    other region is the same program again). A region whose passModel arrays, options and
    column mapping equal those of the same region in the last clearing gets that solve's
    outcome (copied) instead of a new HiGHS run: HiGHS is deterministic, the same model
    and options give the same result. Only solves without a time limit are reused."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[tuple[Any, ...], HighsOutcome]] = {}
        self._now: dict[int, tuple[tuple[Any, ...], HighsOutcome]] = {}
        self.hits = 0
        self.misses = 0

    def new_clearing(self) -> None:
        """Start a clearing: the regions solved in the previous one become the candidates."""
        if self._now:
            self._last, self._now = self._now, {}

    @staticmethod
    def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        return len(a) == len(b) and all(
            (x == y) if not isinstance(x, np.ndarray) else
            (isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y))
            for x, y in zip(a, b))

    def get(self, i: int, key: tuple[Any, ...]) -> HighsOutcome | None:
        last = self._last.get(i)
        if last is None or not self._same(last[0], key):
            self.misses += 1
            return None
        self.hits += 1
        out = last[1]
        self._now[i] = last
        return replace(
            out, x=None if out.x is None else out.x.copy(),
            row_activity=None if out.row_activity is None else out.row_activity.copy(),
            solve_time_s=0.0)

    def put(self, i: int, key: tuple[Any, ...], out: HighsOutcome) -> None:
        self._now[i] = (key, replace(
            out, x=None if out.x is None else out.x.copy(),
            row_activity=None if out.row_activity is None else out.row_activity.copy()))


def _solve_regions(p: Prepared, *, mip_rel_gap: float, time_limit_s: float | None,
                   cache: RegionCache | None = None) -> Solution:
    t_build = t_solve = 0.0
    best: tuple[float, int, FloatArray, ClearingStatus] | None = None
    errors: list[str] = []
    timed_out = False
    t_start = time.perf_counter()
    fast = RegionArrays(p)
    t_build += time.perf_counter() - t_start
    if time_limit_s is not None:
        cache = None
    if cache is not None:
        cache.new_clearing()
    for i in range(p.m):
        if i in p.excluded:
            continue
        t0 = time.perf_counter()
        arr = fast.arrays(i)
        lp = region_program(p, i)[0] if arr is None else None
        t_build += time.perf_counter() - t0
        left = None if time_limit_s is None else time_limit_s - (time.perf_counter() - t_start)
        if arr is None:
            assert lp is not None
            out = solve_highs(lp, mip_rel_gap=mip_rel_gap, time_limit_s=left)
        else:
            key: tuple[Any, ...] = ()
            hit = None
            if cache is not None:
                key = (*(getattr(arr, f.name) for f in fields(arr)), fast.cost, fast.col_lo,
                       fast.free, p.n, float(mip_rel_gap))
                hit = cache.get(i, key)
            out = hit if hit is not None else _run_highs(
                arr, fast.cost, fast.col_lo, fast.free, None, t0=time.perf_counter(),
                mip_rel_gap=mip_rel_gap, time_limit_s=left)
            if cache is not None and hit is None:
                cache.put(i, key, out)
        t_solve += out.solve_time_s
        if out.x is not None and out.objective is not None and out.status.has_solution:
            if best is None or out.objective < best[0] - 1e-9 * (1 + abs(best[0])):
                best = (out.objective, i, out.x[:p.n], out.status)
        elif out.time_limit_hit:
            timed_out = True
            errors.append(f"region {i}: {out.message}")
        elif out.status == ClearingStatus.ERROR:
            errors.append(f"region {i}: {out.message}")
    if best is None:
        if errors:
            return Solution(ClearingStatus.ERROR, "; ".join(errors), None, None, None, t_build,
                            t_solve)
        return Solution(ClearingStatus.INFEASIBLE, "no operating point's region admits the "
                        "request", None, None, None, t_build, t_solve)
    # a region that failed may hold a better activation: the best one found is not proven
    # optimal, and a failure is not a time limit (only HiGHS's kTimeLimit is)
    if best[3] == ClearingStatus.TIME_LIMIT or timed_out:
        status = ClearingStatus.TIME_LIMIT
    else:
        status = ClearingStatus.ERROR if errors else ClearingStatus.OPTIMAL
    return Solution(status, "; ".join(errors), best[1], best[2], best[0], t_build, t_solve)


# --------------------------------------------------------------------------- full MILP
def milp_program(p: Prepared) -> LinearProgram:
    """The full MILP (14a-j); columns ``[dP (m*n) | b (m) | u (k) | t (m*n, proximity)]``."""
    m, n, k = p.m, p.n, len(p.binary)
    pf_all = p.package.p_flex_mw
    mn = m * n
    prox = p.proximity
    ncol = mn + m + k + (mn if prox else 0)
    bcol = mn + np.arange(m)
    mats: list[sp.csr_matrix] = []
    lo: list[npt.ArrayLike] = []
    hi: list[npt.ArrayLike] = []
    # bid_lower / bid_upper (14b,c): dP_ij - lo_ij b_i >= 0, dP_ij - hi_ij b_i <= 0
    r = np.arange(mn)
    ii = np.repeat(np.arange(m), n)
    box_lo = (p.lower[None, :] - pf_all).ravel()
    box_hi = (p.upper[None, :] - pf_all).ravel()
    for coef, l_, h_ in ((box_lo, np.zeros(mn), np.full(mn, INF)),
                         (box_hi, np.full(mn, -INF), np.zeros(mn))):
        mats.append(_coo(np.r_[r, r], np.r_[r, bcol[ii]], np.r_[np.ones(mn), -coef], (mn, ncol)))
        lo.append(l_)
        hi.append(h_)
    # voltage/loading (14d-g): S dP_i - (ub - base) b_i <= 0, S dP_i - (lb - base) b_i >= 0
    for i, blk in enumerate(p.blocks):
        for bound, upper_side in ((blk.ub, True), (blk.lb, False)):
            fin = np.isfinite(bound)     # format 2 has no lower sides
            nr = int(fin.sum())
            if not nr:
                continue
            rhs = bound[fin] - blk.base[fin]
            l_, h_ = ((np.full(nr, -INF), np.zeros(nr)) if upper_side
                      else (np.zeros(nr), np.full(nr, INF)))
            dense = np.hstack([blk.sens[fin], -rhs[:, None]])
            cols = np.r_[np.arange(n) + i * n, mn + i]
            mats.append(sp.csr_matrix((dense.ravel(), np.tile(cols, nr),
                                       np.arange(0, nr * (n + 1) + 1, n + 1)), shape=(nr, ncol)))
            lo.append(l_)
            hi.append(h_)
    # voronoi (14h): (P_i-P_j)^T (P_i-P_j)/2 b_i + (P_i-P_j)^T dP_i >= 0
    vr: list[IntArray] = []
    vc: list[IntArray] = []
    vv: list[FloatArray] = []
    row = 0
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            d = pf_all[i] - pf_all[j]
            vr += [np.full(n + 1, row)]
            vc += [np.r_[np.arange(n) + i * n, mn + i]]
            vv += [np.r_[d, 0.5 * d @ d]]
            row += 1
    if row:
        mats.append(_coo(np.concatenate(vr), np.concatenate(vc), np.concatenate(vv), (row, ncol)))
        lo.append(np.zeros(row))
        hi.append(np.full(row, INF))
    # one_region (14i) and balance (14j)
    mats.append(_coo(np.zeros(m), bcol, np.ones(m), (1, ncol)))
    lo.append([1.0])
    hi.append([1.0])
    mats.append(_coo(np.zeros(mn + m), np.r_[np.arange(mn), bcol],
                     np.r_[np.ones(mn), pf_all.sum(axis=1)], (1, ncol)))
    lo.append([p.request_mw])
    hi.append([p.request_mw])
    # bid_min_size / bid_max_size: min u <= sign x_j <= max u, x_j = sum_i pf_ij b_i + dP_ij
    if k:
        kk = np.arange(k)
        rows = np.r_[np.repeat(kk, m), np.repeat(kk, m), kk]
        cols_dp = (np.arange(m)[None, :] * n + p.binary[:, None]).ravel()
        cols_b = np.tile(bcol, k)
        s = np.repeat(p.sign[p.binary], m)
        vals_b = (pf_all[:, p.binary].T * p.sign[p.binary][:, None]).ravel()
        for mag, l_, h_ in ((p.min_mag, np.zeros(k), np.full(k, INF)),
                            (p.max_mag, np.full(k, -INF), np.zeros(k))):
            mats.append(_coo(rows, np.r_[cols_dp, cols_b, mn + m + kk], np.r_[s, vals_b, -mag],
                             (k, ncol)))
            lo.append(l_)
            hi.append(h_)
    # proximity: t_ij >= |dP_ij|
    if prox:
        t = mn + m + k + r
        mats.append(_coo(np.r_[r, r], np.r_[t, r], np.r_[np.ones(mn), -np.ones(mn)], (mn, ncol)))
        mats.append(_coo(np.r_[r, r], np.r_[t, r], np.ones(2 * mn), (mn, ncol)))
        lo += [np.zeros(mn), np.zeros(mn)]
        hi += [np.full(mn, INF), np.full(mn, INF)]
    cost = np.r_[np.tile(p.weight, m), pf_all @ p.weight, np.zeros(k),
                 np.full(mn if prox else 0, p.proximity_weight)]
    col_lo = np.r_[np.minimum(box_lo, 0), np.zeros(m + k), np.zeros(mn if prox else 0)]
    col_hi = np.r_[np.maximum(box_hi, 0), np.ones(m + k), np.full(mn if prox else 0, INF)]
    col_hi[mn + np.asarray(p.excluded, dtype=int)] = 0.0     # excluded regions: b_i = 0
    integ = np.r_[np.zeros(mn), np.ones(m + k), np.zeros(mn if prox else 0)].astype(np.int8)
    return LinearProgram(cost, col_lo, col_hi, sp.vstack(mats, format="csr"),
                         np.concatenate([np.asarray(v, float) for v in lo]),
                         np.concatenate([np.asarray(v, float) for v in hi]), integ)


def _milp_start(p: Prepared, warm: ClearingResult | None) -> FloatArray | None:
    """A MILP start vector from a previous clearing on a package with the same columns."""
    if warm is None or not warm.ok or set(warm.activation_mw) != set(p.package.columns):
        return None
    labels = [pt.label for pt in p.package.points]
    if warm.operating_point_label not in labels:
        return None
    i = labels.index(warm.operating_point_label)
    if i in p.excluded:
        return None
    m, n, k, mn = p.m, p.n, len(p.binary), p.m * p.n
    x = np.array([warm.activation_mw[c] for c in p.package.columns])
    x = np.clip(x, p.lower, p.upper)
    start = np.zeros(mn + m + k + (mn if p.proximity else 0))
    dp = x - p.package.p_flex_mw[i]
    start[i * n:(i + 1) * n] = dp
    start[mn + i] = 1.0
    start[mn + m:mn + m + k] = np.abs(x[p.binary]) > 1e-9
    if p.proximity:
        start[mn + m + k + i * n: mn + m + k + (i + 1) * n] = np.abs(dp)
    return start


def _solve_milp(p: Prepared, *, mip_rel_gap: float, time_limit_s: float | None,
                warm_start: ClearingResult | None = None) -> Solution:
    t0 = time.perf_counter()
    lp = milp_program(p)
    start = _milp_start(p, warm_start)
    t_build = time.perf_counter() - t0
    out = solve_highs(lp, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s, start=start)
    if out.x is None or not out.status.has_solution:
        return Solution(out.status, out.message or "infeasible", None, None, None, t_build,
                        out.solve_time_s)
    m, n, mn = p.m, p.n, p.m * p.n
    b = out.x[mn:mn + m]
    i = int(np.argmax(b))
    x = p.package.p_flex_mw[i] + out.x[i * n:(i + 1) * n]
    return Solution(out.status, out.message, i, x, out.objective, t_build, out.solve_time_s)


# --------------------------------------------------------------------------- zero request
def zero_activation_point(p: Prepared) -> int | None:
    """The operating point whose region makes "activate nothing" provably optimal, or None.

    For ``request_mw == 0``, ``x = 0`` is an optimum of the MILP when (i) 0 lies in every
    bid's box (semi-continuous bids may stay off), (ii) no objective term can be negative
    over the box, so 0 is a lower bound, and (iii) some point ``i`` sits at ``P_flex,i = 0``
    (then ``x = 0`` lies in its Voronoi region and ``dP_i = 0``) with every voltage and
    loading of that point inside its limits. Most co-simulation frames have no request; they
    need no solver. Of several such points the most recent one (a refinement at zero
    activation supersedes the base point) is returned. The rows are those of the prepared
    blocks: a row the prefilter dropped stays inside its limits over the whole box, which
    holds ``x = 0``; for format 2, ``a · 0 <= rhs`` means ``rhs >= 0``.
    """
    if p.request_mw != 0.0 or not (np.all(p.lower <= 0.0) and np.all(p.upper >= 0.0)):
        return None
    if np.any(p.weight * p.lower < 0.0) or np.any(p.weight * p.upper < 0.0):
        return None
    pkg = p.package
    for i in range(pkg.m - 1, -1, -1):
        if i in p.excluded or np.any(pkg.p_flex_mw[i] != 0.0):
            continue
        blk = p.blocks[i]
        if np.all(blk.base >= blk.lb) and np.all(blk.base <= blk.ub):
            return i
    return None


# --------------------------------------------------------------------------- results
def make_result(p: Prepared, *, status: ClearingStatus | str, message: str, point: int | None,
                x: npt.ArrayLike | None, objective: float | None, backend: str, method: str,
                build_time_s: float, solve_time_s: float) -> ClearingResult:
    """Assemble a ClearingResult from the selected point and activation (any backend)."""
    res = ClearingResult(status=ClearingStatus.parse(status), request_mw=p.request_mw,
                         message=message,
                         backend=backend, method=method, objective_name=p.objective,
                         build_time_s=build_time_s, solve_time_s=solve_time_s)
    if point is None or x is None:
        return res
    pkg = p.package
    xa = np.clip(np.asarray(x, float), p.lower, p.upper)  # solver noise outside the box
    xa[np.abs(xa) < 1e-12] = 0.0
    res.delivered_mw = float(xa.sum())
    res.cost_eur_per_h = float(np.abs(xa) @ p.bids.price_eur_per_mwh)
    res.objective = None if objective is None else float(objective)
    res.operating_point = int(point)
    res.operating_point_label = pkg.points[point].label
    res.activation_mw = dict(zip(pkg.columns, xa.tolist()))
    if isinstance(pkg, HardenedPackage):
        return res    # format 2: the predictions are the DSO's (SensitivityPackage.predict)
    vm, ld = pkg.predict(point, xa)
    res.predicted_vm_pu = {c: float(v) for c, v in zip(pkg.vm_rows, vm)}
    res.predicted_loading_percent = {c: float(v) for c, v in zip(pkg.loading_rows, ld)}
    return res


def solve_direct(p: Prepared, *, method: str = "auto", mip_rel_gap: float = 1e-6,
                 time_limit_s: float | None = None,
                 warm_start: ClearingResult | None = None,
                 region_cache: RegionCache | None = None) -> ClearingResult:
    """Solve a prepared clearing with highspy; see the module docstring for ``method``;
    ``region_cache``: reuse identical region solves of the last clearing (RegionCache)."""
    if method not in METHODS:
        raise ClearingError(f"unknown method {method!r}; choose one of {METHODS}")
    if method == "auto":
        method = "regions"
    if method == "regions":
        s = _solve_regions(p, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s,
                           cache=region_cache)
    else:
        s = _solve_milp(p, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s,
                        warm_start=warm_start)
    return make_result(p, status=s.status, message=s.message, point=s.point, x=s.x,
                       objective=s.objective, backend="direct", method=method,
                       build_time_s=s.build_time_s, solve_time_s=s.solve_time_s)
