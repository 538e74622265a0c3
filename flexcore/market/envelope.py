"""Clear bids against a privacy envelope: a box per bid and the balance row (an LP).

An envelope package (``HardenedPackage`` with ``privacy == "envelope"``, built by the DSO in
``flexcore.dso.envelope``) publishes for every bid ``j`` an activation range
``lower_mw[j] <= x_j <= upper_mw[j]`` inside which *every* combination keeps every grid
limit (at the operating point(s) it was computed for). The TSO's clearing is then

    min  sum_j c_j |x_j|  (abs_cost; c^T x for signed_cost)
    s.t. sum_j x_j = request_mw,   lower_mw <= x <= upper_mw

which HiGHS solves exactly (``flexcore.market.direct.solve_highs``). Each bid's sign is fixed
(the envelope lies within ``[min(0, P_M), max(0, P_M)]``), so ``|x_j|`` is linear. A request
outside ``[sum lower_mw, sum upper_mw]`` is infeasible: the result carries a Diagnosis with
exactly that deliverable range. The selected region is the published point nearest to the
activation (Voronoi rule); the predictions stay empty (they are the DSO's: the TSO holds no
rows).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError, ClearingResult, Diagnosis
from flexcore.exchange.enums import ClearingStatus, Objective, PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import FloatArray
from flexcore.market.direct import LinearProgram, solve_highs

#: a request this close (MW) to the end of the deliverable range is served
RANGE_TOL_MW = 1e-9


def clear_envelope(package: HardenedPackage, bids: BidTable, request_mw: float, *,
                   objective: Objective | str = Objective.ABS_COST) -> ClearingResult:
    """Clear ``request_mw`` (MW, > 0 upward) against the envelope (module docstring).

    Bid ids must equal ``package.columns`` (any order); the bids' own volumes must contain
    the envelope (ClearingError otherwise: the DSO cannot offer more than was bid).
    """
    t0 = time.perf_counter()
    try:
        obj = Objective.parse(objective, where="objective")
    except FlexcosimError as exc:
        raise ClearingError(str(exc)) from None
    if obj == Objective.ABS_COST_PROXIMITY:
        raise ClearingError("objective 'abs_cost_proximity' needs operating points with rows; "
                            "an envelope has none: use 'abs_cost' or 'signed_cost'")
    if package.privacy != PrivacyLevel.ENVELOPE or package.lower_mw is None \
            or package.upper_mw is None:
        raise ClearingError(f"package privacy is {str(package.privacy)!r}, not an envelope "
                            "with 'lower_mw'/'upper_mw'")
    if not np.isfinite(request_mw):
        raise ClearingError(f"request_mw must be finite, got {request_mw!r}")
    have, want = set(bids.ids), set(package.columns)
    if have != want:
        raise ClearingError(
            f"bid ids do not match the envelope's columns: columns without a bid "
            f"{sorted(want - have)[:5]}, bids without a column {sorted(have - want)[:5]}")
    b = bids.subset(package.columns)
    lo, hi = package.lower_mw, package.upper_mw
    tol = 1e-9
    outside = np.flatnonzero((lo < b.lower_mw - tol) | (hi > b.upper_mw + tol) | (lo > hi))
    if outside.size:
        raise ClearingError(f"envelope of bid {package.columns[outside[0]]!r} "
                            f"[{lo[outside[0]]:g}, {hi[outside[0]]:g}] MW is not within its "
                            f"bid [{b.lower_mw[outside[0]]:g}, {b.upper_mw[outside[0]]:g}] MW")
    price = b.price_eur_per_mwh
    weight: FloatArray = price * np.sign(b.volume_mw) if obj == Objective.ABS_COST \
        else price.copy()
    request = float(request_mw)
    total_lo, total_hi = float(lo.sum()), float(hi.sum())
    res = ClearingResult(status=ClearingStatus.INFEASIBLE, request_mw=request,
                         backend="direct", method="envelope", objective_name=obj.value)
    if not total_lo - RANGE_TOL_MW <= request <= total_hi + RANGE_TOL_MW:
        res.diagnosis = Diagnosis(
            message=f"request {request:g} MW lies outside the envelope's deliverable range "
                    f"[{total_lo:g}, {total_hi:g}] MW (sum of the bids' ranges per direction)",
            max_deliverable_mw=total_hi, min_deliverable_mw=total_lo,
            region_ranges=[[pt.label, total_lo, total_hi] for pt in package.points])
        res.message = res.diagnosis.message
        res.build_time_s = time.perf_counter() - t0
        return res
    n = package.n
    lp = LinearProgram(cost=weight, col_lo=lo.astype(float), col_hi=hi.astype(float),
                       a=sp.csr_matrix(np.ones((1, n))), row_lo=np.array([request]),
                       row_hi=np.array([request]), integrality=np.zeros(n, np.int8))
    t_build = time.perf_counter() - t0
    out = solve_highs(lp)
    res.build_time_s, res.solve_time_s = t_build, out.solve_time_s
    res.status, res.message = out.status, out.message
    if out.x is None or not out.status.has_solution:
        return res
    x: FloatArray = np.clip(out.x[:n], lo, hi)
    x[np.abs(x) < 1e-12] = 0.0
    point = int(np.argmin(((package.p_flex_mw - x[None, :]) ** 2).sum(axis=1)))
    res.delivered_mw = float(x.sum())
    res.cost_eur_per_h = float(np.abs(x) @ price)
    res.objective = None if out.objective is None else float(out.objective)
    res.operating_point = point
    res.operating_point_label = package.points[point].label
    res.activation_mw = {c: float(v) for c, v in zip(package.columns, x)}
    return res
