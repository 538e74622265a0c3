"""One frame of DSO-TSO coordination: linearise, clear, check in AC, refine (METHOD.md).

Only packages and clearings cross between the two parties here, exactly as in the CLI
exchange (``dso linearize`` -> ``tso clear`` -> ``dso validate`` / ``dso refine``):

1. the DSO publishes a package (operating points ``a_i``);
2. the TSO clears the bids against it;
3. the DSO runs the AC power flow at the cleared activation and compares it with the
   TSO's estimates; if the error is above the tolerance (or a limit is violated) it adds the
   cleared activation as a new operating point and the TSO clears again, up to
   ``max_rounds`` refinement rounds;
4. Safety: the final clearing is dispatched only if the AC power flow keeps every limit;
   otherwise the result says ``safe = False`` and the caller must not dispatch it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from flexcore.exchange.bids import BidTable
from flexcore.dso.linearizer import Linearizer, PointNotConverged, ValidationReport
from flexcore.market import ClearingResult, clear
from flexcore.exchange.package import SensitivityPackage


@dataclass(frozen=True)
class RoundReport:
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


@dataclass
class CoordinationResult:
    clearing: ClearingResult
    validation: ValidationReport | None
    package: SensitivityPackage
    rounds: list[RoundReport] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """Dispatchable: optimal and the AC power flow keeps every limit."""
        return self.clearing.status == "optimal" and self.validation is not None \
            and self.validation.safe

    def activation(self, ids) -> np.ndarray:
        return np.array([self.clearing.activation_mw.get(b, 0.0) for b in ids])


def coordinate(linearizer: Linearizer, bids: BidTable, request_mw: float, *,
               package: SensitivityPackage | None = None, fractions=(0.0, 0.5, 1.0),
               screen_rows: bool = False, max_rounds: int = 2, tol_vm_mae_pu: float = 1e-5,
               tol_loading_mae_percent: float = 5e-3, **clear_options) -> CoordinationResult:
    """Clear ``request_mw`` with up to ``max_rounds`` refinement rounds (see module doc)."""
    t0 = time.perf_counter()
    if package is None:
        package = linearizer.linearize(fractions, screen_rows=screen_rows).package
    tso_bids = bids.without_bus()
    rounds: list[RoundReport] = []
    validation = None
    dso_time = time.perf_counter() - t0
    for k in range(max_rounds + 1):
        t1 = time.perf_counter()
        result = clear(package, tso_bids, request_mw, **clear_options)
        t_clear = time.perf_counter() - t1
        if result.status != "optimal":
            rounds.append(RoundReport(k, result.status, float("nan"), "", *(4 * [float("nan")]),
                                      0, t_clear, dso_time))
            return CoordinationResult(result, None, package, rounds)
        t2 = time.perf_counter()
        act = np.array([result.activation_mw.get(b, 0.0) for b in package.columns])
        validation = linearizer.validate(act, predicted_vm_pu=result.predicted_vm_pu,
                                         predicted_loading_percent=result.predicted_loading_percent)
        dso_time = time.perf_counter() - t2
        rounds.append(RoundReport(k, result.status, result.cost_eur, result.operating_point_label,
                                  validation.vm_mae_pu, validation.vm_rmse_pu,
                                  validation.loading_mae_percent, validation.loading_rmse_percent,
                                  len(validation.violations), t_clear, dso_time))
        accurate = (validation.converged and validation.vm_mae_pu <= tol_vm_mae_pu
                    and validation.loading_mae_percent <= tol_loading_mae_percent)
        if k == max_rounds or (accurate and validation.safe):
            break
        t3 = time.perf_counter()
        try:
            package = linearizer.refine(package, act, label=f"refine {k + 1}")
        except PointNotConverged:
            break
        dso_time = time.perf_counter() - t3
    return CoordinationResult(result, validation, package, rounds)
