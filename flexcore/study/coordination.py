"""One frame of DSO-TSO coordination: linearise, clear, check in AC, refine (docs/method.md).

Only packages and clearings cross between the two parties here, exactly as in the CLI
exchange (``dso linearize`` -> ``tso clear`` -> ``dso validate`` / ``dso refine``):

1. the DSO publishes a package (operating points ``a_i``);
2. the TSO clears the bids against it;
3. the DSO checks the clearing in AC and either refines or gives its verdict: the round
   policy is :class:`flexcore.dso.refinement.RefinementSession`, the same as in the
   co-simulation's DSO agent;
4. Safety: rows that AC violates are tightened by the observed mismatch, the TSO clears
   with a solver margin, and the cheapest AC-safe round is dispatched; without one the DSO
   refuses with the reason in ``verdict.message`` and the result says ``safe = False``
   (the caller must not dispatch it).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from flexcore.dso.linearizer import Linearizer
from flexcore.dso.refinement import RefinementPolicy, RefinementSession, RoundRecord, Verdict
from flexcore.dso.validation import ValidationReport
from flexcore.exchange.bids import BidTable
from flexcore.exchange.package import SensitivityPackage
from flexcore.market import ClearingResult, clear


@dataclass(frozen=True)
class RoundReport:
    round: int  # 0 = the package's own points, k = after k refinements
    status: str
    cost_eur_per_h: float
    operating_point_label: str
    vm_mae_pu: float
    vm_rmse_pu: float
    loading_mae_percent: float
    loading_rmse_percent: float
    violations: int
    clear_time_s: float
    dso_time_s: float
    ac_safe: bool = False
    rows_tightened: int = 0  # rows shifted after this round


@dataclass
class CoordinationResult:
    clearing: ClearingResult
    validation: ValidationReport | None
    package: SensitivityPackage
    rounds: list[RoundReport] = field(default_factory=list)
    verdict: Verdict | None = None

    @property
    def selected_round(self) -> int | None:
        """The round whose clearing is dispatched (None: refused)."""
        return self.verdict.rounds if self.verdict is not None and self.verdict.dispatch \
            else None

    @property
    def safe(self) -> bool:
        """Dispatchable: optimal and the AC power flow keeps every limit."""
        return self.clearing.status == "optimal" and self.validation is not None \
            and self.validation.safe

    def activation(self, ids) -> np.ndarray:
        return self.clearing.activation_vector(ids)


def coordinate(linearizer: Linearizer, bids: BidTable, request_mw: float, *,
               package: SensitivityPackage | None = None, fractions=(0.0, 0.5, 1.0),
               screen_rows: bool = False, max_rounds: int = 2, tol_vm_mae_pu: float = 1e-5,
               tol_loading_mae_percent: float = 5e-3, stop_when_accurate: bool = True,
               tighten_unsafe: bool = True, solver_margin: bool = True,
               keep_cheapest_safe: bool = True, **clear_options) -> CoordinationResult:
    """Clear ``request_mw`` with up to ``max_rounds`` refinement rounds (see module doc and
    :class:`~flexcore.dso.refinement.RefinementPolicy` for the options). ``clearing`` and
    ``validation`` of the result are the dispatched round's, else the last round's."""
    t0 = time.perf_counter()
    if package is None:
        package = linearizer.linearize(fractions, screen_rows=screen_rows).package
    session = RefinementSession(linearizer, policy=RefinementPolicy(
        max_rounds=max_rounds, tol_vm_mae_pu=tol_vm_mae_pu,
        tol_loading_mae_percent=tol_loading_mae_percent, stop_when_accurate=stop_when_accurate,
        tighten_unsafe=tighten_unsafe, solver_margin=solver_margin,
        keep_cheapest_safe=keep_cheapest_safe))
    step = session.open(package)
    # bids on isolated buses are undeliverable: the DSO fixes them to 0 for the TSO
    tso_bids = linearizer.deliverable_bids(bids).without_bus()
    rounds: list[RoundReport] = []
    dso_time = time.perf_counter() - t0
    while True:
        t1 = time.perf_counter()
        result = clear(step, tso_bids, request_mw, **clear_options)
        t_clear = time.perf_counter() - t1
        step = session.on_clearing(result)
        rec = session.records[-1]
        rounds.append(_round_report(rec, result, t_clear,
                                    rec.dso_time_s if rec.round else dso_time + rec.dso_time_s))
        if isinstance(step, Verdict):
            return CoordinationResult(step.clearing or result, step.validation,
                                      session.package or package, rounds, step)


def _round_report(rec: RoundRecord, result: ClearingResult, t_clear: float,
                  dso_time_s: float) -> RoundReport:
    k, v = rec.round, rec.validation
    if v is None:
        return RoundReport(k, result.status, math.nan, "", *(4 * [math.nan]), 0, t_clear,
                           dso_time_s)
    return RoundReport(k, result.status, result.cost_eur_per_h, result.operating_point_label,
                       v.vm_mae_pu, v.vm_rmse_pu, v.loading_mae_percent, v.loading_rmse_percent,
                       len(v.violations), t_clear, dso_time_s, ac_safe=v.safe,
                       rows_tightened=rec.rows_tightened)
