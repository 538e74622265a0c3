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

"The one refinement loop that uses both, and its stopping rule, is
:class:`flexcore.dso.refinement.RefinementSession` (policy options ``solver_margin``,
``tighten_unsafe``, ``keep_cheapest_safe``); ``coordinate()``, the DSO agent and the
evaluation all drive it. Per round it publishes ``with_solver_margin(package)``, validates
at the nominal limits and, for an unsafe converged clearing, calls :func:`tighten` on the
(unmargined) package the clearing was computed from, so that ``package.predict(point, x)``
equals the clearing's estimates, before adding the refinement point.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from flexcore.exchange.limits import VIOLATION_TOL, Limits
from flexcore.exchange.package import SensitivityPackage

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
    return package.with_limits(solver_margin_limits(
        package.limits, vm_margin_pu=vm_margin_pu, loading_margin_percent=loading_margin_percent))


def solver_margin_limits(lim: Limits, *, vm_margin_pu: float = SOLVER_MARGIN_VM_PU,
                         loading_margin_percent: float = SOLVER_MARGIN_LOADING_PERCENT
                         ) -> Limits:
    """``lim`` tightened by the margins on both sides (the limits of
    :func:`with_solver_margin`)."""
    if vm_margin_pu < 0 or loading_margin_percent < 0:
        raise ValueError("margins must be >= 0")
    return Limits(
        vm_min_pu=lim.vm_min_pu + vm_margin_pu, vm_max_pu=lim.vm_max_pu - vm_margin_pu,
        loading_min_percent=lim.loading_min_percent + loading_margin_percent,
        loading_max_percent=lim.loading_max_percent - loading_margin_percent)


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
