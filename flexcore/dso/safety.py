"""AC safety of the coordination: tighten the rows that AC violates, and know when to give up.

Why this exists (docs/method.md "Refinement rounds and the safety rule"): a clearing that the
linear model calls feasible can violate an AC limit, and plain refinement need not repair it.
The Voronoi rule selects the *nearest* operating point, not the most accurate one: after a
refinement point is added at an unsafe clearing, the next clearing slides to the boundary
between the old region and the new one and keeps using the old, optimistic linearisation there
(SimBench ``1-LV-semiurb4--0-sw``, request -0.11 MW: three rounds at the a=0.5 region's edge,
each ~7 % over on one line). Two remedies, both package transforms that keep the format:

:func:`tighten`
    shifts the base value of every row that AC violates at the selected operating point by
    the observed mismatch ``ac - predicted``. Row ``base + s dP <= ub`` becomes
    ``base + delta + s dP <= ub``, i.e. ``base + s dP <= ub - delta`` (and likewise for the
    lower side). The shifted model is exact at the cleared activation, so that activation is
    cut off from its region for good; shifts only ever grow (a violation seen against an
    already shifted row adds the new mismatch), so a region can never return to a clearing
    it has once been caught at.
:func:`with_solver_margin`
    clears against limits tightened by more than HiGHS's primal feasibility tolerance
    (1e-7, in the scaled problem), so that the DSO's AC check at the *nominal* limits
    (tolerance 1e-9) does not refuse a clearing for a solver residue (seen: 0.94999999007
    p.u.; 100.0000000012 %).

Exactness of the shift: the package has one global :class:`~flexcore.exchange.limits.Limits`,
so a base shift moves both sides of a row: tightening one side by ``|delta|`` relaxes the
opposite side by ``|delta|``. That is exactly the one-sided tightening whenever the opposite
side cannot bind anywhere in the bid box (checked with the exact range bound the market's
prefilter uses; rows where it could are counted in ``TighteningReport.relaxed_rows``). The
market's :class:`~flexcore.market.direct.RowBlock` already carries per-row ``lb``/``ub``;
making it fully exact needs only optional per-point, per-row offsets in the package that
``prepare()`` subtracts there. Safety does not depend on it: every dispatched clearing is
checked in AC at the nominal limits.

:func:`coordinate_safe` is the refinement loop with both (stopping rule in its docstring).

Wiring into a refinement loop (``flexcore/dso/refinement.py``), per round ``k``:

1. TSO side: ``clear(with_solver_margin(package), tso_bids, request_mw)`` (or the one-line
   margin in ``flexcore.market.direct.prepare``: ``lim = package.limits`` -> limits
   tightened by ``SOLVER_MARGIN_*``); the DSO validates at the nominal limits as today.
2. DSO side, if the validation is unsafe and converged: *before or after*
   ``linearizer.refine(package, x)`` (they touch different points)::

       package, rep = tighten(package, point=result.operating_point,
                              clearing_activation=x,
                              ac_vm_pu=validation.ac_vm_pu,            # dicts are fine
                              ac_loading_percent=validation.ac_loading_percent,
                              limits=linearizer.limits,
                              lower_mw=bids.lower_mw, upper_mw=bids.upper_mw)

   ``package`` must be the (unmargined) package the clearing was computed from, so that
   ``package.predict(point, x)`` equals the clearing's estimates.
3. Keep the cheapest AC-safe clearing; give up as in :func:`coordinate_safe`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from flexcore.dso.linearizer import Linearizer, PointNotConverged, ValidationReport
from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingResult
from flexcore.exchange.enums import ClearingStatus, FrameVerdict
from flexcore.exchange.limits import VIOLATION_TOL, Limits
from flexcore.exchange.package import SensitivityPackage
from flexcore.market import clear

#: HiGHS's default primal feasibility tolerance (absolute, in the scaled problem)
HIGHS_PRIMAL_FEASIBILITY_TOL = 1e-7
#: default margins: 10x (p.u.) and 100x (%, loading rows carry larger coefficients, seen
#: 4e-7 %) the solver tolerance, far below any engineering significance
SOLVER_MARGIN_VM_PU = 1e-6
SOLVER_MARGIN_LOADING_PERCENT = 1e-5


# --------------------------------------------------------------------------- transforms
def with_solver_margin(package: SensitivityPackage, *,
                       vm_margin_pu: float = SOLVER_MARGIN_VM_PU,
                       loading_margin_percent: float = SOLVER_MARGIN_LOADING_PERCENT
                       ) -> SensitivityPackage:
    """The package with its limits tightened by the margins on both sides (exact: only the
    global Limits change). Clear against it; validate in AC against the nominal limits."""
    if vm_margin_pu < 0 or loading_margin_percent < 0:
        raise ValueError("margins must be >= 0")
    lim = package.limits
    return replace(package, limits=Limits(
        vm_min_pu=lim.vm_min_pu + vm_margin_pu, vm_max_pu=lim.vm_max_pu - vm_margin_pu,
        loading_min_percent=lim.loading_min_percent + loading_margin_percent,
        loading_max_percent=lim.loading_max_percent - loading_margin_percent))


@dataclass(frozen=True)
class RowShift:
    """One row shifted by :func:`tighten` at one operating point."""

    kind: str            # "vm_pu" or "loading_percent"
    key: str             # package row key
    point: str           # operating point label
    predicted: float     # the clearing's estimate (shifted package)
    ac: float            # AC power flow value
    shift: float         # added to the row's base value at the point (= ac - predicted)


@dataclass(frozen=True)
class TighteningReport:
    shifts: tuple[RowShift, ...] = ()
    #: shifted rows whose opposite side can bind in the bid box (the shift relaxes it there)
    relaxed_rows: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.shifts)


def tighten(package: SensitivityPackage, *, point: int, clearing_activation,
            ac_vm_pu, ac_loading_percent, limits: Limits | None = None,
            lower_mw=None, upper_mw=None, tol: float = VIOLATION_TOL
            ) -> tuple[SensitivityPackage, TighteningReport]:
    """Shift, at operating point ``point``, every row that AC violates by ``ac - predicted``.

    ``clearing_activation``: the cleared activation (column order); ``ac_vm_pu`` /
    ``ac_loading_percent``: the AC power flow there, in the package's row order (arrays) or
    as ``{row key: value}`` (e.g. ``ValidationReport.ac_vm_pu``; missing keys are not
    checked). ``limits``: the nominal limits the AC values are judged by (default: the
    package's). ``predicted`` is ``package.predict(point, activation)``, i.e. what the
    clearing used, so calling this on an already tightened package adds the new mismatch
    to the old shift (shifts only grow). A row is shifted only in the direction of its
    violated side; rows AC keeps within limits are left alone. ``lower_mw``/``upper_mw``
    (the bids' box) enable the exactness check (``relaxed_rows``).
    """
    lim = package.limits if limits is None else limits
    x = np.asarray(clearing_activation, float)
    pred_vm, pred_ld = package.predict(point, x)
    ac_vm = _row_values(ac_vm_pu, package.vm_rows, pred_vm)
    ac_ld = _row_values(ac_loading_percent, package.loading_rows, pred_ld)
    vm = package.vm_pu.copy()
    ld = package.loading_percent.copy()
    label = package.points[point].label
    shifts: list[RowShift] = []
    for kind, keys, ac, pred, base, lo, hi in (
            ("vm_pu", package.vm_rows, ac_vm, pred_vm, vm, lim.vm_min_pu, lim.vm_max_pu),
            ("loading_percent", package.loading_rows, ac_ld, pred_ld, ld,
             lim.loading_min_percent, lim.loading_max_percent)):
        delta = ac - pred
        # lower side violated and AC below the estimate, or upper side and AC above it
        sel = ((ac < lo - tol) & (delta < 0)) | ((ac > hi + tol) & (delta > 0))
        for r in np.flatnonzero(sel):
            base[point, r] += delta[r]
            shifts.append(RowShift(kind, keys[r], label, float(pred[r]), float(ac[r]),
                                   float(delta[r])))
    out = replace(package, vm_pu=vm, loading_percent=ld)
    relaxed: tuple[str, ...] = ()
    if shifts and lower_mw is not None and upper_mw is not None:
        relaxed = _opposite_side_reachable(out, point, shifts, np.asarray(lower_mw, float),
                                           np.asarray(upper_mw, float))
    return out, TighteningReport(tuple(shifts), relaxed)


def _row_values(values, keys, fallback: np.ndarray) -> np.ndarray:
    if isinstance(values, dict):
        return np.array([float(values.get(k, f)) for k, f in zip(keys, fallback)])
    arr = np.asarray(values, float)
    if arr.shape != fallback.shape:
        raise ValueError(f"AC values have shape {arr.shape}, the package rows {fallback.shape}")
    return arr


def _opposite_side_reachable(package: SensitivityPackage, point: int,
                             shifts: list[RowShift], lower_mw, upper_mw) -> tuple[str, ...]:
    """Shifted rows whose *relaxed* side the linear model can reach within the bid box."""
    lim = package.limits
    pf = package.p_flex_mw[point]
    lo, hi = lower_mw - pf, upper_mw - pf
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    vpos = {k: i for i, k in enumerate(package.vm_rows)}
    lpos = {k: i for i, k in enumerate(package.loading_rows)}
    out = []
    for s in shifts:
        if s.kind == "vm_pu":
            r = vpos[s.key]
            sens, base, a, b = package.vtdf[point, r], package.vm_pu[point, r], \
                lim.vm_min_pu, lim.vm_max_pu
        else:
            r = lpos[s.key]
            sens, base, a, b = package.ltdf[point, r], package.loading_percent[point, r], \
                lim.loading_min_percent, lim.loading_max_percent
        mid, rad = sens @ centre, np.abs(sens) @ half
        # the relaxed side is the upper one for a negative shift, the lower one otherwise
        if (s.shift < 0 and base + mid + rad >= b) or (s.shift > 0 and base + mid - rad <= a):
            out.append(s.key)
    return tuple(out)


# --------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class SafeRoundReport:
    round: int  # 0 = the package's own points, k = after k refinements
    status: str
    cost_eur: float
    operating_point_label: str
    vm_mae_pu: float
    vm_rmse_pu: float
    loading_mae_percent: float
    loading_rmse_percent: float
    violations: int
    clear_time_s: float
    dso_time_s: float
    ac_safe: bool = False
    worst_violation: str = ""
    rows_tightened: int = 0   # rows shifted after this round


@dataclass
class SafeCoordinationResult:
    """Like :class:`flexcore.study.coordination.CoordinationResult`, plus the verdict.

    ``clearing``/``validation``: the dispatched clearing when ``verdict == "optimal"``
    (the cheapest AC-safe round), else the last one tried. ``gave_up_reason`` is ``None``
    when a clearing is dispatched, else says why not.
    """

    clearing: ClearingResult
    validation: ValidationReport | None
    package: SensitivityPackage
    rounds: list[SafeRoundReport] = field(default_factory=list)
    verdict: FrameVerdict = FrameVerdict.OPTIMAL
    gave_up_reason: str | None = None
    selected_round: int | None = None
    tightenings: list[TighteningReport] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """Dispatchable: optimal and the AC power flow keeps every (nominal) limit."""
        return (self.verdict == FrameVerdict.OPTIMAL and self.clearing.status == "optimal"
                and self.validation is not None and self.validation.safe)

    def activation(self, ids) -> np.ndarray:
        return np.array([self.clearing.activation_mw.get(b, 0.0) for b in ids])


def _round_report(k: int, result: ClearingResult, validation: ValidationReport,
                  times: tuple[float, float], worst: str, rows_tightened: int = 0
                  ) -> SafeRoundReport:
    v = validation
    return SafeRoundReport(
        k, result.status, float(result.cost_eur if result.cost_eur is not None else math.nan),
        result.operating_point_label or "", v.vm_mae_pu, v.vm_rmse_pu, v.loading_mae_percent,
        v.loading_rmse_percent, len(v.violations), times[0], times[1], ac_safe=v.safe,
        worst_violation=worst, rows_tightened=rows_tightened)


def coordinate_safe(linearizer: Linearizer, bids: BidTable, request_mw: float, *,
                    package: SensitivityPackage | None = None, fractions=(0.0, 0.5, 1.0),
                    screen_rows: bool = False, max_rounds: int = 3,
                    tol_vm_mae_pu: float = 1e-5, tol_loading_mae_percent: float = 5e-3,
                    vm_margin_pu: float = SOLVER_MARGIN_VM_PU,
                    loading_margin_percent: float = SOLVER_MARGIN_LOADING_PERCENT,
                    **clear_options) -> SafeCoordinationResult:
    """Clear ``request_mw`` and end AC-safe, or refuse with a stated reason.

    Rounds ``k = 0 .. max_rounds``; the TSO clears against the package with limits
    tightened by the solver margin (:func:`with_solver_margin`); the DSO checks the
    clearing in AC at the *nominal* limits (``linearizer.limits``). Then:

    1. AC-safe and accurate (voltage MAE <= ``tol_vm_mae_pu`` and loading MAE <=
       ``tol_loading_mae_percent``, as in ``coordinate()``): stop.
    2. AC-safe, not accurate: remember it as a candidate; refine (new operating point at
       the activation) and clear again.
    3. Unsafe: refine, and :func:`tighten` the rows AC violates at the selected point by
       the observed mismatch; clear again.
    4. After round ``max_rounds`` (or when refinement's power flow fails) stop.

    Outcome: the cheapest AC-safe clearing of all rounds is dispatched (``verdict
    "optimal"``; this is the last round whenever the last round is safe and no earlier one
    was cheaper). Without any AC-safe round it gives up (never dispatches):

    - ``"infeasible"``: a clearing returned infeasible: the linear model, with the observed
      AC mismatches shifted into the rows, admits no activation for the request (the
      reason names the rows shifted so far and the market's diagnosis);
    - ``"unsafe"``: ``max_rounds`` were used and every clearing violated an AC limit, or
      the AC power flow at a clearing did not converge (nothing to measure);
    - ``"time_limit"`` / ``"error"``: the solver's status, passed through.

    Because shifts only grow and each one makes the linear model exact at the clearing it
    was measured at, no unsafe clearing is ever offered twice by the same region.
    """
    t0 = time.perf_counter()
    if package is None:
        package = linearizer.linearize(fractions, screen_rows=screen_rows).package
    tso_bids = bids.without_bus()
    nominal = linearizer.limits
    rounds: list[SafeRoundReport] = []
    tightenings: list[TighteningReport] = []
    best: tuple[float, int, ClearingResult, ValidationReport] | None = None
    result: ClearingResult | None = None
    validation: ValidationReport | None = None
    verdict, reason = FrameVerdict.UNSAFE, None
    dso_time = time.perf_counter() - t0
    for k in range(max_rounds + 1):
        t1 = time.perf_counter()
        cleared_pkg = with_solver_margin(package, vm_margin_pu=vm_margin_pu,
                                         loading_margin_percent=loading_margin_percent)
        result = clear(cleared_pkg, tso_bids, request_mw, **clear_options)
        t_clear = time.perf_counter() - t1
        if result.status != ClearingStatus.OPTIMAL:
            rounds.append(SafeRoundReport(k, result.status, math.nan, "", math.nan, math.nan,
                                          math.nan, math.nan, 0, t_clear, dso_time))
            validation = None
            verdict = FrameVerdict.parse(result.status)
            shifted = sum(t.n for t in tightenings)
            if result.status == ClearingStatus.INFEASIBLE:
                reason = (f"infeasible in round {k}: the linear model"
                          + (f" with the observed AC mismatches ({shifted} row shift(s) so "
                             f"far)" if shifted else "")
                          + f" admits no activation for {request_mw:g} MW; market: "
                          + (result.message or "infeasible"))
            else:
                reason = f"clearing {result.status} in round {k}: {result.message}"
            break
        t2 = time.perf_counter()
        cost = float(result.cost_eur if result.cost_eur is not None else math.nan)
        point = int(result.operating_point if result.operating_point is not None else -1)
        x = result.activation_vector(package.columns)
        validation = linearizer.validate(
            x, predicted_vm_pu=result.predicted_vm_pu,
            predicted_loading_percent=result.predicted_loading_percent)
        dso_time = time.perf_counter() - t2
        safe = validation.safe
        accurate = (validation.converged and validation.vm_mae_pu <= tol_vm_mae_pu
                    and validation.loading_mae_percent <= tol_loading_mae_percent)
        mv = validation.max_violation
        worst = "" if mv is None else f"{mv['kind']} {mv['key']} = {mv['value']:.6g} " \
                                      f"(limit {mv['limit']:g})"
        if not validation.converged:
            worst = "AC power flow did not converge"
        times = (t_clear, dso_time)
        if safe and (best is None or cost < best[0] - 1e-9 * (1 + abs(best[0]))):
            best = (cost, k, result, validation)
        if (safe and accurate) or k == max_rounds:
            rounds.append(_round_report(k, result, validation, times, worst))
            if not safe:
                reason = (f"unsafe after {max_rounds} refinement round(s): every clearing "
                          f"violates an AC limit (last: {worst})")
            break
        if not validation.converged:
            rounds.append(_round_report(k, result, validation, times, worst))
            reason = f"round {k}: the AC power flow at the clearing did not converge"
            break
        t3 = time.perf_counter()
        n_shift = 0
        if not safe:
            ac_vm = np.array([validation.ac_vm_pu[r] for r in package.vm_rows])
            ac_ld = np.array([validation.ac_loading_percent[r] for r in package.loading_rows])
            package, rep = tighten(package, point=point,
                                   clearing_activation=x, ac_vm_pu=ac_vm,
                                   ac_loading_percent=ac_ld, limits=nominal,
                                   lower_mw=bids.lower_mw, upper_mw=bids.upper_mw)
            tightenings.append(rep)
            n_shift = rep.n
        rounds.append(_round_report(k, result, validation, times, worst, n_shift))
        try:
            package = linearizer.refine(package, x, label=f"refine {k + 1}")
        except PointNotConverged:
            reason = f"round {k}: refinement's AC power flow did not converge"
            break
        dso_time = time.perf_counter() - t3
    if best is not None:
        return SafeCoordinationResult(best[2], best[3], package, rounds, FrameVerdict.OPTIMAL,
                                      None, best[1], tightenings)
    assert result is not None
    return SafeCoordinationResult(result, validation, package, rounds, verdict,
                                  reason or "no AC-safe clearing", None, tightenings)
