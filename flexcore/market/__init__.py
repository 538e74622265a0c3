"""TSO / market side: clear balancing bids against a DSO's sensitivity package.

Imports neither pandapower nor mosaik, and pyomo only when ``backend="pyomo"`` is used.

>>> result = clear(package, bids, 1.8)                       # doctest: +SKIP
>>> result.status, result.cost_eur_per_h, result.activation_mw     # doctest: +SKIP
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import (
    ClearingError,
    ClearingFileError,
    ClearingResult,
    Diagnosis,
    read_clearing,
    write_clearing,
)
from flexcore.exchange.enums import ClearingStatus, Objective, PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import SensitivityPackage
from flexcore.market.diagnose import base_violations, diagnose
from flexcore.market.direct import (
    METHODS,
    RegionCache,
    align_bids,
    make_result,
    prepare,
    solve_direct,
    zero_activation_point,
)
from flexcore.market.envelope import clear_envelope

BACKENDS = ("direct", "pyomo")

__all__ = [
    "BACKENDS", "METHODS", "ClearingError", "ClearingFileError", "ClearingResult",
    "ClearingStatus", "Diagnosis", "Objective", "align_bids", "base_violations", "clear",
    "diagnose", "prepare", "read_clearing", "write_clearing",
]


def clear(package: SensitivityPackage | HardenedPackage, bids: BidTable, request_mw: float, *,
          backend: str = "direct", objective: Objective | str = Objective.ABS_COST,
          mip_rel_gap: float = 1e-6, time_limit_s: float | None = None,
          extra_constraints: Callable[[Any], None] | None = None,
          proximity_weight: float = 1e-3, warm_start: ClearingResult | None = None,
          method: str = "auto", prefilter: bool = True,
          diagnose_infeasible: bool = True,
          region_cache: RegionCache | None = None) -> ClearingResult:
    """Clear ``bids`` for the balancing request ``request_mw`` (MW, > 0 upward).

    backend
        ``"direct"`` (sparse matrices straight into highspy, fast) or ``"pyomo"`` (named
        pyomo components, extensible through ``extra_constraints(model)``, called before
        the solve). Both solve the same MILP and agree.
    objective
        an :class:`~flexcore.exchange.enums.Objective` or its string: ``"abs_cost"``
        (``sum_j c_j |x_j|``, default), ``"signed_cost"`` (the source's literal ``c^T x``) or
        ``"abs_cost_proximity"`` (``abs_cost`` plus ``proximity_weight * sum |dP_i|``, a
        tie-breaker towards the operating point). An unknown string raises ClearingError.
    method
        direct backend only: ``"regions"`` (one problem per operating point with ``b_i = 1``:
        an LP, or a small MILP when bids have ``min_mw > 0`` or are indivisible; the best
        region is the exact MILP optimum) or ``"milp"`` (the full MILP with ``b``);
        ``"auto"`` = ``"regions"``. The pyomo backend always builds the full MILP.
    prefilter
        drop voltage/loading rows that cannot bind within the bids' bounds (exact).
    warm_start
        a previous result on a package with the same columns: MIP start of the direct
        MILP (ignored by the other paths).
    region_cache
        direct backend, ``"regions"``: a :class:`flexcore.market.direct.RegionCache`
        kept between the clearings of one frame; a region identical to the same region of
        the last clearing reuses its solve (the same result, no HiGHS run).

    A zero request that activating nothing provably meets at least cost (see
    :func:`flexcore.market.direct.zero_activation_point`) is answered without a solver
    (``result.method == "zero"``); otherwise, e.g. when the base case already violates a
    limit, the MILP is solved as usual (and may counter-trade).

    ``package`` is a format-1 :class:`SensitivityPackage` (research) or a format-2
    :class:`HardenedPackage`; a format-2 result carries the activation and the selected
    region but no predictions (the DSO computes them from its private package). An envelope
    package goes to :func:`flexcore.market.envelope.clear_envelope`.

    Bid ids must equal ``package.columns`` (any order; ClearingError names mismatches). An
    infeasible request is not an exception: status ``ClearingStatus.INFEASIBLE`` with a
    :class:`Diagnosis` (unless ``diagnose_infeasible`` is False).
    """
    if backend not in BACKENDS:
        raise ClearingError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if extra_constraints is not None and backend != "pyomo":
        raise ClearingError("extra_constraints needs backend='pyomo'")
    if isinstance(package, HardenedPackage):
        package.check_request(request_mw)  # rows published for one request (PackageError)
    if isinstance(package, HardenedPackage) and package.privacy == PrivacyLevel.ENVELOPE:
        return clear_envelope(package, bids, request_mw, objective=objective)
    t0 = time.perf_counter()
    p = prepare(package, bids, request_mw, objective=objective,
                proximity_weight=proximity_weight, prefilter=prefilter)
    t_prep = time.perf_counter() - t0
    zero = zero_activation_point(p) if extra_constraints is None else None
    if zero is not None:
        result = make_result(p, status=ClearingStatus.OPTIMAL,
                             message="request 0: nothing to activate",
                             point=zero, x=np.zeros(p.n), objective=0.0, backend=backend,
                             method="zero", build_time_s=0.0, solve_time_s=0.0)
    elif backend == "direct":
        result = solve_direct(p, method=method, mip_rel_gap=mip_rel_gap,
                              time_limit_s=time_limit_s, warm_start=warm_start,
                              region_cache=region_cache)
    else:
        from flexcore.market.model import build_from_prepared, extract_solution, solve_pyomo_model

        t1 = time.perf_counter()
        model = build_from_prepared(p)
        if extra_constraints is not None:
            extra_constraints(model)
        t_build = time.perf_counter() - t1
        status, msg, t_solve = solve_pyomo_model(model, mip_rel_gap=mip_rel_gap,
                                                 time_limit_s=time_limit_s)
        result = extract_solution(model, status=status, message=msg, build_time_s=t_build,
                                  solve_time_s=t_solve)
    result.build_time_s += t_prep
    if result.status == ClearingStatus.INFEASIBLE and diagnose_infeasible:
        result.diagnosis = diagnose(p, mip_rel_gap=mip_rel_gap, time_limit_s=time_limit_s)
        result.message = result.diagnosis.message
    return result
