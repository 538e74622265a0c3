"""The clearing MILP as a pyomo model with named components (build / solve / extract).

Components (sets ``I`` points, ``J`` bid ids, ``VM``/``LD`` kept (point, row key) pairs):

- ``dP[i, j]`` continuous, ``b[i]`` binary, ``u[j]`` binary (only bids with ``min_mw > 0``
  or indivisible), ``abs_dP[i, j] >= |dP[i, j]|`` (``abs_cost_proximity`` only);
- expression ``x[j] = sum_i (p_flex[i, j] b[i] + dP[i, j])`` (the dispatched activation);
- constraints ``bid_lower``, ``bid_upper`` (14b,c), ``loading_lower``, ``loading_upper``
  (14d,e), ``vm_lower``, ``vm_upper`` (14f,g), ``voronoi[i, j]`` (14h), ``one_region``
  (14i), ``balance`` (14j), ``bid_min_size``/``bid_max_size`` (per-bid binaries),
  ``abs_dP_pos``/``abs_dP_neg`` (proximity);
- objective ``cost``.

Researchers can print the model or add constraints before solving (``extra_constraints``
hook of :func:`flexcore.market.clear`). Importing this module imports pyomo; the rest of
``flexcore.market`` does not.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition
from pyomo.contrib.solver.solvers.highs import Highs
from pyomo.core.expr import LinearExpression

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingResult
from flexcore.exchange.enums import ClearingStatus, Objective
from flexcore.exchange.limits import FloatArray
from flexcore.market.direct import AnyPackage, Prepared, make_result, prepare

#: pyomo is untyped: its models, variables and expressions are ``Any`` to mypy
_Rule = Callable[[Any, int, str], Any]


def _lin(coefs: FloatArray, variables: list[Any]) -> LinearExpression:
    return LinearExpression(constant=0.0, linear_coefs=[float(c) for c in coefs],
                            linear_vars=variables)


def build_pyomo_model(package: AnyPackage, bids: BidTable, request_mw: float, *,
                      objective: Objective | str = Objective.ABS_COST,
                      proximity_weight: float = 1e-3,
                      prefilter: bool = True) -> pyo.ConcreteModel:
    """The clearing MILP of docs/method.md as a pyomo ConcreteModel (not solved).

    Solve it with :func:`solve_pyomo_model`, read it with :func:`extract_solution`.
    ``prefilter`` drops voltage/loading rows that cannot bind (exact for the linear model);
    pass ``False`` to get every row of the package.
    """
    return build_from_prepared(prepare(package, bids, request_mw, objective=objective,
                                       proximity_weight=proximity_weight, prefilter=prefilter))


def build_from_prepared(p: Prepared) -> pyo.ConcreteModel:
    """:func:`build_pyomo_model` for data already prepared by :func:`direct.prepare`."""
    pkg = p.package
    m, ids = p.m, list(pkg.columns)
    pf = pkg.p_flex_mw
    model = pyo.ConcreteModel(name="flexcosim_clearing")
    model.I = pyo.Set(initialize=range(m), ordered=True)
    model.J = pyo.Set(initialize=ids, ordered=True)
    col = {c: k for k, c in enumerate(ids)}
    lo_box = p.lower[None, :] - pf
    hi_box = p.upper[None, :] - pf
    model.dP = pyo.Var(model.I, model.J, bounds=lambda _, i, j: (
        min(lo_box[i, col[j]], 0.0), max(hi_box[i, col[j]], 0.0)))
    model.b = pyo.Var(model.I, within=pyo.Binary)
    for i in p.excluded:        # a region infeasible on its own (format 2): never selected
        model.b[i].fix(0)
    dpv = [[model.dP[i, j] for j in ids] for i in range(m)]

    model.bid_lower = pyo.Constraint(model.I, model.J, rule=lambda mo, i, j: (
        mo.dP[i, j] >= lo_box[i, col[j]] * mo.b[i]))
    model.bid_upper = pyo.Constraint(model.I, model.J, rule=lambda mo, i, j: (
        mo.dP[i, j] <= hi_box[i, col[j]] * mo.b[i]))

    # voltage / loading rows kept by the prefilter: (point, row key) -> (sens, base, lb, ub)
    rows: dict[bool, dict[tuple[int, str], tuple[FloatArray, float, float, float]]] = {
        True: {}, False: {}}
    for i, blk in enumerate(p.blocks):
        for r in range(len(blk.rows)):
            rows[bool(blk.is_vm[r])][(i, p.row_keys[blk.rows[r]])] = (
                blk.sens[r], float(blk.base[r]), float(blk.lb[r]), float(blk.ub[r]))
    model.VM = pyo.Set(initialize=list(rows[True]), dimen=2, ordered=True)
    model.LD = pyo.Set(initialize=list(rows[False]), dimen=2, ordered=True)

    Table = dict[tuple[int, str], tuple[FloatArray, float, float, float]]

    def lower_rule(table: Table) -> _Rule:
        def rule(mo: Any, i: int, key: str) -> Any:
            s, base, lb, _ = table[(i, key)]
            if not np.isfinite(lb):     # format 2 publishes upper sides only
                return pyo.Constraint.Skip
            return lb * mo.b[i] + base * (1 - mo.b[i]) <= base + _lin(s, dpv[i])
        return rule

    def upper_rule(table: Table) -> _Rule:
        def rule(mo: Any, i: int, key: str) -> Any:
            s, base, _, ub = table[(i, key)]
            if not np.isfinite(ub):
                return pyo.Constraint.Skip
            return base + _lin(s, dpv[i]) <= ub * mo.b[i] + base * (1 - mo.b[i])
        return rule

    model.loading_lower = pyo.Constraint(model.LD, rule=lower_rule(rows[False]))
    model.loading_upper = pyo.Constraint(model.LD, rule=upper_rule(rows[False]))
    model.vm_lower = pyo.Constraint(model.VM, rule=lower_rule(rows[True]))
    model.vm_upper = pyo.Constraint(model.VM, rule=upper_rule(rows[True]))

    model.VOR = pyo.Set(initialize=[(i, j) for i in range(m) for j in range(m) if i != j],
                        dimen=2, ordered=True)

    def voronoi(mo: Any, i: int, j: int) -> Any:
        d = pf[i] - pf[j]
        return 0.5 * float(d @ d) * mo.b[i] + _lin(d, dpv[i]) >= 0
    model.voronoi = pyo.Constraint(model.VOR, rule=voronoi)
    model.one_region = pyo.Constraint(expr=sum(model.b[i] for i in model.I) == 1)
    model.x = pyo.Expression(model.J, rule=lambda mo, j: sum(
        pf[i, col[j]] * mo.b[i] + mo.dP[i, j] for i in mo.I))
    model.balance = pyo.Constraint(expr=sum(
        float(pf[i].sum()) * model.b[i] + _lin(np.ones(p.n), dpv[i]) for i in range(m))
        == p.request_mw)

    bin_ids = [ids[j] for j in p.binary]
    model.BIN = pyo.Set(initialize=bin_ids, ordered=True)
    model.u = pyo.Var(model.BIN, within=pyo.Binary)
    mins = dict(zip(bin_ids, p.min_mag))
    maxs = dict(zip(bin_ids, p.max_mag))
    model.bid_min_size = pyo.Constraint(model.BIN, rule=lambda mo, j: (
        float(p.sign[col[j]]) * mo.x[j] >= float(mins[j]) * mo.u[j]))
    model.bid_max_size = pyo.Constraint(model.BIN, rule=lambda mo, j: (
        float(p.sign[col[j]]) * mo.x[j] <= float(maxs[j]) * mo.u[j]))

    cost = sum(float(pf[i] @ p.weight) * model.b[i] + _lin(p.weight, dpv[i]) for i in range(m))
    if p.proximity:
        model.abs_dP = pyo.Var(model.I, model.J, within=pyo.NonNegativeReals)
        model.abs_dP_pos = pyo.Constraint(model.I, model.J, rule=lambda mo, i, j: (
            mo.abs_dP[i, j] >= mo.dP[i, j]))
        model.abs_dP_neg = pyo.Constraint(model.I, model.J, rule=lambda mo, i, j: (
            mo.abs_dP[i, j] >= -mo.dP[i, j]))
        cost = cost + p.proximity_weight * sum(model.abs_dP[i, j] for i in model.I
                                               for j in model.J)
    model.cost = pyo.Objective(expr=cost, sense=pyo.minimize)
    model._flexcosim = p  # the prepared data, for extract_solution
    return model


def solve_pyomo_model(model: pyo.ConcreteModel, *, mip_rel_gap: float = 1e-6,
                      time_limit_s: float | None = None
                      ) -> tuple[ClearingStatus, str, float]:
    """Solve with HiGHS (pyomo.contrib.solver); returns (status, message, solve time)."""
    opt = Highs()
    if not opt.available():
        return ClearingStatus.ERROR, "HiGHS is not available to pyomo", 0.0
    kwargs = {"time_limit": time_limit_s} if time_limit_s is not None else {}
    t0 = time.perf_counter()
    res = opt.solve(model, load_solutions=False, raise_exception_on_nonoptimal_result=False,
                    rel_gap=mip_rel_gap, **kwargs)
    dt = time.perf_counter() - t0
    tc = res.termination_condition
    if tc in (TerminationCondition.provenInfeasible, TerminationCondition.locallyInfeasible,
              TerminationCondition.infeasibleOrUnbounded):
        return ClearingStatus.INFEASIBLE, "HiGHS: infeasible", dt
    if res.solution_status in (SolutionStatus.optimal, SolutionStatus.feasible):
        res.solution_loader.load_vars()
        if tc == TerminationCondition.convergenceCriteriaSatisfied:
            return ClearingStatus.OPTIMAL, "", dt
        return (ClearingStatus.TIME_LIMIT, f"HiGHS stopped ({tc.name}) with a feasible solution",
                dt)
    return ClearingStatus.ERROR, f"HiGHS termination {tc.name}", dt


def extract_solution(model: pyo.ConcreteModel, *, status: ClearingStatus | str,
                     message: str = "",
                     build_time_s: float = 0.0, solve_time_s: float = 0.0) -> ClearingResult:
    """ClearingResult from a solved model (selected point = largest ``b``)."""
    p: Prepared = model._flexcosim
    status = ClearingStatus.parse(status, where="status")
    point: int | None = None
    x: FloatArray | None = None
    obj: float | None = None
    if status.has_solution:
        b = np.array([pyo.value(model.b[i]) for i in model.I])
        point = int(np.argmax(b))
        x = np.array([pyo.value(model.x[j]) for j in model.J])
        obj = float(pyo.value(model.cost))
    return make_result(p, status=status, message=message, point=point, x=x, objective=obj,
                       backend="pyomo", method="milp", build_time_s=build_time_s,
                       solve_time_s=solve_time_s)
