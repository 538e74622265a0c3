"""A region study: bids per LV area, one request, one clearing over all packages, the whole
region's AC power flow, refinement rounds, a report per area.

Errors are judged against one pandapower power flow of the **whole region** with the
activation applied, on the rows that matter: those the activation moved (by more than
1e-6 p.u. / 1e-4 %) or that are within 1 % of a limit (|V - limit| <= 0.01 limit, |L| >=
99 %). Violations follow the base-case rule of :mod:`flexcore.market.multi`: a row beyond
its limit in the AC result counts as a violation of the clearing only if it is also worse
than in the base case (beyond ``VM_TOL_PU`` / ``LOADING_TOL_PERCENT``); rows violated
already in the base case and not made worse are reported as ``base_violations``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandapower as pp

from flexcore.dso.linearizer import FLEX_SGEN_NAME
from flexcore.dso.refinement import RefinementPolicy
from flexcore.exchange.bids import BidTable
from flexcore.exchange.dispatch import RoundOutcome, choose_dispatch
from flexcore.exchange.limits import Limits
from flexcore.grid import ppinternals, sensitivity
from flexcore.grid.powerflow import PF_OPTIONS
from flexcore.market.multi import AreaPackage, LpBasis, RegionClearing, clear_region
from flexcore.region.dsos import (
    FramePolicy,
    LVDso,
    MVDso,
    SignedExchange,
    area_packages,
    injections,
    make_lv_dso,
    make_mv_dso,
)
from flexcore.region.ids import identities
from flexcore.region.publish import MV_ROLE, LazyPublication
from flexcore.region.split import Region

#: the MV DSO's name (a role, public: its package is the one over area injections)
MV_NAME = MV_ROLE

#: the source's Table 1 RMSE (p.u., %): the error target on the rows that matter
TABLE1_VM_PU = 2.6e-5
TABLE1_LOADING_PERCENT = 9.8e-3
VM_TOL_PU = 1e-6
LOADING_TOL_PERCENT = 1e-4
#: a row binds when the clearing's prediction is this close to (or beyond) its limit and
#: its base case is within the limit
BINDING_VM_PU = 1e-5
BINDING_LOADING_PERCENT = 1e-3


def region_bids(region: Region, *, seed: int = 0, share: tuple[float, float] = (0.5, 2.5),
                price_eur_per_mwh: tuple[float, float] = (40.0, 250.0),
                areas: list[str] | None = None) -> dict[str, BidTable]:
    """Seeded upward bids, one per in-service load of each LV area; an area's total is
    ``U(share) x`` its transformer rating, so full activation can overload it."""
    rng = np.random.default_rng(seed)
    out = {}
    for a in region.areas:
        if areas is not None and a.name not in areas:
            continue
        loads = a.net.load[a.net.load.in_service.astype(bool)]
        if not len(loads):
            continue
        w = rng.uniform(0.5, 1.5, len(loads))
        total = rng.uniform(*share) * float(a.net.trafo.sn_mva.iloc[0])
        vol = np.round(w / w.sum() * total, 6)
        out[a.name] = BidTable(
            ids=tuple(f"{a.name}-{i}" for i in loads.index),
            volume_mw=vol, price_eur_per_mwh=np.round(rng.uniform(*price_eur_per_mwh,
                                                                  len(loads)), 2),
            bus=loads.bus.to_numpy(np.int64))
    return out


# --------------------------------------------------------------------------- AC of the region
@dataclass
class RegionAC:
    """One AC power flow of the whole region: values by bus and by branch."""

    converged: bool
    vm_pu: dict[int, float]
    loading_percent: dict[tuple[str, int], float]
    ext_grid_p_mw: float
    trafo_p_mw: dict[int, float] = field(default_factory=dict)   # at the hv side
    trafo_q_mvar: dict[int, float] = field(default_factory=dict)


class RegionGrid:
    """The whole region with one activation sgen per bid bus (the validator's model)."""

    def __init__(self, region: Region, buses: np.ndarray):
        self.net = copy.deepcopy(region.net)
        self.buses = np.unique(buses)
        self.sgens = np.asarray(pp.create_sgens(self.net, self.buses, p_mw=0.0,
                                                name=FLEX_SGEN_NAME))

    def run(self, bus: np.ndarray, x: np.ndarray) -> RegionAC:
        per_bus = np.zeros(len(self.buses))
        np.add.at(per_bus, np.searchsorted(self.buses, bus), x)
        self.net.sgen.loc[self.sgens, "p_mw"] = per_bus
        try:
            pp.runpp(self.net, **PF_OPTIONS)
        except pp.LoadflowNotConverged:
            return RegionAC(False, {}, {}, math.nan)
        vm, ld, keys = sensitivity.signed_results(self.net)
        bus_index = ppinternals.extract_state(self.net, check=False).bus_index
        return RegionAC(True, dict(zip(bus_index.tolist(), vm.tolist())),
                        dict(zip(keys, ld.tolist())),
                        float(self.net.res_ext_grid.p_mw.sum()),
                        self.net.res_trafo.p_hv_mw.to_dict(),
                        self.net.res_trafo.q_hv_mvar.to_dict())


# --------------------------------------------------------------------------- evaluation
@dataclass
class RowCheck:
    """Predicted vs AC on one package's rows."""

    n_relevant_vm: int = 0
    n_relevant_loading: int = 0
    max_vm_err_pu: float = 0.0
    max_loading_err_percent: float = 0.0
    violations: int = 0
    base_violations: int = 0
    worst: str = ""
    n_binding_vm: int = 0           # predicted at its limit (see BINDING_*), base case within
    n_binding_loading: int = 0
    vm_min_pu: float = math.nan     # AC extremes over all the package's rows
    vm_max_pu: float = math.nan
    max_abs_loading_percent: float = math.nan


def _violated(a: np.ndarray, b: np.ndarray, lo: float, hi: float, tol: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """The base-case rule (module doc) on AC values ``a`` with base values ``b``: (rows
    beyond a limit, rows of them worse than in the base case: the violations)."""
    viol = (a < lo - tol) | (a > hi + tol)
    worse = viol & (((a < lo) & (a < b - tol)) | ((a > hi) & (a > b + tol)))
    return viol, worse


def violated_rows(limits: Limits, package, keymap, ac: RegionAC, base: RegionAC
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """The rows of a DSO's ``package`` (its ``keymap``: row key -> bus / branch) that the
    AC result ``ac`` violates under the base-case rule, as ({vm row key: AC value},
    {loading row key: AC value}): what the DSO tightens (:meth:`flexcore.region.dsos.
    LVDso.tighten`)."""
    out = []
    for keys, where, vals, bvals, lo, hi, tol in (
            (package.vm_rows, keymap.vm_pu, ac.vm_pu, base.vm_pu, limits.vm_min_pu,
             limits.vm_max_pu, VM_TOL_PU),
            (package.loading_rows, keymap.loading_percent, ac.loading_percent,
             base.loading_percent, limits.loading_min_percent, limits.loading_max_percent,
             LOADING_TOL_PERCENT)):
        a = np.array([vals[where[k]] for k in keys], dtype=float)
        b = np.array([bvals[where[k]] for k in keys], dtype=float)
        _, worse = _violated(a, b, lo, hi, tol)
        out.append({keys[r]: float(a[r]) for r in np.flatnonzero(worse)})
    return out[0], out[1]


def _check_rows(limits: Limits, keys_vm: list[Any], keys_ld: list[Any], pred_vm: np.ndarray,
                pred_ld: np.ndarray, ac: RegionAC, base: RegionAC) -> RowCheck:
    out = RowCheck()
    for kind, keys, pred, vals, bvals, lo, hi, tol_move, tol_v, tol_b in (
            ("vm", keys_vm, pred_vm, ac.vm_pu, base.vm_pu, limits.vm_min_pu, limits.vm_max_pu,
             VM_TOL_PU, VM_TOL_PU, BINDING_VM_PU),
            ("loading", keys_ld, pred_ld, ac.loading_percent, base.loading_percent,
             limits.loading_min_percent, limits.loading_max_percent, LOADING_TOL_PERCENT,
             LOADING_TOL_PERCENT, BINDING_LOADING_PERCENT)):
        pred = np.asarray(pred, dtype=float)
        a = np.array([vals[k] for k in keys], dtype=float)
        b = np.array([bvals[k] for k in keys], dtype=float)
        binding = int((((pred >= hi - tol_b) | (pred <= lo + tol_b)) & (b >= lo) & (b <= hi)
                       ).sum())
        margin_lo, margin_hi = 0.01 * abs(lo), 0.01 * abs(hi)
        relevant = (np.abs(a - b) > tol_move) | (a <= lo + margin_lo) | (a >= hi - margin_hi)
        err = np.abs(pred - a)[relevant]
        m = float(err.max()) if err.size else 0.0
        viol, worse = _violated(a, b, lo, hi, tol_v)
        out.violations += int(worse.sum())
        out.base_violations += int((viol & ~worse).sum())
        if worse.any():
            k = int(np.flatnonzero(worse)[0])
            out.worst = f"{kind} {keys[k]}: {a[k]:.5f}"
        if kind == "vm":
            out.n_relevant_vm, out.max_vm_err_pu = int(relevant.sum()), m
            out.n_binding_vm = binding
            if a.size:
                out.vm_min_pu, out.vm_max_pu = float(a.min()), float(a.max())
        else:
            out.n_relevant_loading, out.max_loading_err_percent = int(relevant.sum()), m
            out.n_binding_loading = binding
            if a.size:
                out.max_abs_loading_percent = float(np.abs(a).max())
    return out


@dataclass
class AreaReport:
    name: str
    bids: int
    delivered_mw: float
    cost_eur_per_h: float
    rounds: int
    point: int | None
    slack_dv_pu: float
    check: RowCheck
    #: rows this DSO shifted by the observed AC mismatch in the frame (all rounds)
    rows_tightened: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RegionReport:
    grid: str
    request_mw: float
    status: str
    cost_eur_per_h: float
    rounds: int
    ac_converged: bool
    ac_safe: bool
    delivered_at_interface_mw: float
    max_vm_err_pu: float
    max_loading_err_percent: float
    relevant_rows: int
    areas: list[AreaReport]
    mv: AreaReport
    times_s: dict[str, float] = field(default_factory=dict)
    clearing: dict[str, Any] = field(default_factory=dict)
    #: rows the final clearing predicts at their limit (voltage + loading)
    binding_mv_rows: int = 0
    binding_lv_rows: int = 0
    #: per clearing (round 0 = first): cost, AC-safe, errors, binding rows
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the final dispatch's AC power flow of the whole region (not in as_dict)
    ac: RegionAC | None = field(default=None, repr=False, compare=False)
    #: what the DSOs published for the final clearing (privacy "exact"; not in as_dict)
    published: LazyPublication | None = field(default=None, repr=False, compare=False)
    privacy: str = "full"
    #: the final clearing (what a next frame's :class:`FramePolicy` starts from; not in
    #: as_dict)
    dispatch: RegionClearing | None = field(default=None, repr=False, compare=False)
    #: the change of the areas' draws (P, Q at their transformers' MV side, per MV column)
    #: from the base case to the final dispatch (not in as_dict)
    draw_change: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                               compare=False)
    #: whether a round's clearing was dispatched, and which (the safety rule,
    #: :func:`flexcore.exchange.dispatch.choose_dispatch`); ``status`` is the frame's
    #: :class:`~flexcore.exchange.enums.FrameVerdict`
    dispatched: bool = True
    dispatched_round: int | None = None
    message: str = ""
    #: the last round's clearing and AC power flow (what the last check saw; not in as_dict)
    last_clearing: RegionClearing | None = field(default=None, repr=False, compare=False)
    last_ac: RegionAC | None = field(default=None, repr=False, compare=False)

    _OBJECTS = ("ac", "published", "dispatch", "draw_change", "last_clearing", "last_ac")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, **{k: None for k in self._OBJECTS}))
        for k in self._OBJECTS:
            d.pop(k)
        d["table1_rmse"] = {"vm_pu": TABLE1_VM_PU, "loading_percent": TABLE1_LOADING_PERCENT}
        d["within_table1"] = {"vm": self.max_vm_err_pu <= TABLE1_VM_PU,
                              "loading": self.max_loading_err_percent
                              <= TABLE1_LOADING_PERCENT}
        return d

    def as_text(self) -> str:
        active = [a for a in self.areas if abs(a.delivered_mw) > 1e-9]
        lines = [
            f"grid: {self.grid}; request {self.request_mw:.4f} MW; status {self.status}; "
            + (f"dispatched round {self.dispatched_round}" if self.dispatched else
               f"nothing dispatched ({self.message})"),
            f"cost {self.cost_eur_per_h:.2f} EUR/h; rounds {self.rounds}; AC converged "
            f"{self.ac_converged}; AC-safe {self.ac_safe}",
            f"delivered at the region's interface (ext_grid change, with losses): "
            f"{self.delivered_at_interface_mw:.4f} MW",
            f"largest error on {self.relevant_rows} relevant rows: "
            f"{self.max_vm_err_pu:.2e} p.u. (Table 1 RMSE {TABLE1_VM_PU:.1e}), "
            f"{self.max_loading_err_percent:.2e} % (Table 1 RMSE "
            f"{TABLE1_LOADING_PERCENT:.1e})",
            f"areas: {len(self.areas)}, dispatched: {len(active)}; MV: "
            f"{self.mv.check.violations} violation(s), {self.mv.check.base_violations} "
            "base-case violation(s)",
            f"binding rows (predicted at their limit): MV {self.binding_mv_rows} (voltage "
            f"{self.mv.check.n_binding_vm}, loading {self.mv.check.n_binding_loading}), LV "
            f"{self.binding_lv_rows}; AC extremes: MV {self.mv.check.vm_min_pu:.4f}.."
            f"{self.mv.check.vm_max_pu:.4f} p.u., {self.mv.check.max_abs_loading_percent:.1f} %",
            f"{'area':>8} {'bids':>5} {'MW':>8} {'EUR/h':>9} {'rnd':>3} {'dV_slack':>9} "
            f"{'vm err':>9} {'ld err':>9} {'viol':>4} {'base':>4}",
        ]
        for a in sorted(self.areas, key=lambda r: -r.delivered_mw)[:25]:
            c = a.check
            lines.append(f"{a.name:>8} {a.bids:>5} {a.delivered_mw:8.4f} {a.cost_eur_per_h:9.2f} "
                         f"{a.rounds:>3} {a.slack_dv_pu:9.2e} {c.max_vm_err_pu:9.2e} "
                         f"{c.max_loading_err_percent:9.2e} {c.violations:>4} "
                         f"{c.base_violations:>4}")
        lines.append("times: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.times_s.items()))
        return "\n".join(lines)


@dataclass
class RegionSetup:
    """The DSOs of a study (private models) and the validator's whole-region grid."""

    region: Region
    lv: list[LVDso]
    mv: MVDso | None
    grid: RegionGrid
    bid_bus: np.ndarray
    times_s: dict[str, float]
    #: public DSO id -> the area's private name (``lv<trafo>``); the runner's view only
    area_names: dict[str, str] = field(default_factory=dict)
    #: DSO (public id, "mv") -> seed of its publications' shuffles (each DSO's own)
    shuffle_seeds: dict[str, int] = field(default_factory=dict)

    def area_name(self, dso: LVDso) -> str:
        return self.area_names.get(dso.name, dso.name)


def setup_region(region: Region, bids: dict[str, BidTable], *, coupled: bool = True,
                 fractions: tuple[float, ...] = (0.0, 0.5, 1.0), seed: int = 0,
                 secret: str | bytes | None = None) -> RegionSetup:
    """The DSOs of ``region`` (one per area in ``bids``, keyed by area name) and the
    validator's grid. Each DSO is known to the TSO by its public id, its bids by pseudonyms,
    and salts its row keys privately (:mod:`flexcore.region.ids`, from ``seed`` and
    ``secret``; None: fresh OS entropy, so ids differ between runs but the clearing does
    not)."""
    t0 = time.perf_counter()
    ids = identities(list(bids) + [MV_NAME], seed=seed, secret=secret)
    lv = [make_lv_dso(region, replace(region.area(name), name=ids[name].public_id),
                      ids[name].pseudonymous(b), fractions=fractions, salt=ids[name].salt)
          for name, b in bids.items()]
    t1 = time.perf_counter()
    mv = make_mv_dso(region, lv, fractions=fractions, salt=ids[MV_NAME].salt,
                     model_names=list(bids)) if coupled else None
    t2 = time.perf_counter()
    bus = np.concatenate([d.bids.bus for d in lv])
    grid = RegionGrid(region, bus)
    return RegionSetup(region, lv, mv, grid, bus,
                       {"lv_packages": t1 - t0, "mv_package": t2 - t1},
                       {ids[n].public_id: n for n in bids},
                       {(ids[n].public_id if n != MV_NAME else n): ids[n].shuffle_seed
                        for n in ids})


PRIVACY_LEVELS = ("full", "exact")


def _evaluate(setup: RegionSetup, clearing: RegionClearing, base: RegionAC
              ) -> tuple[RegionAC, list[RowCheck], RowCheck]:
    x = np.concatenate([clearing.activation_mw[d.name] for d in setup.lv])
    ac = setup.grid.run(setup.bid_bus, x)
    if not ac.converged:
        return ac, [RowCheck() for _ in setup.lv], RowCheck()
    checks = []
    for d in setup.lv:
        km = d.lin.keymap
        checks.append(_check_rows(
            setup.region.lv_limits, [km.vm_pu[k] for k in d.package.vm_rows],
            [km.loading_percent[k] for k in d.package.loading_rows],
            clearing.predicted_vm_pu[d.name], clearing.predicted_loading_percent[d.name],
            ac, base))
    mvc = RowCheck()
    if setup.mv is not None:
        km = setup.mv.lin.keymap
        pkg = setup.mv.package
        mvc = _check_rows(setup.region.mv_limits, [km.vm_pu[k] for k in pkg.vm_rows],
                          [km.loading_percent[k] for k in pkg.loading_rows],
                          clearing.mv_predicted_vm_pu, clearing.mv_predicted_loading_percent,
                          ac, base)
    return ac, checks, mvc


def _draw_change(lv: list[LVDso], base: RegionAC, ac: RegionAC
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The areas' draws at their transformers' MV side, ``ac`` minus ``base`` (P, Q)."""
    return (np.array([ac.trafo_p_mw[d.area.trafo] - base.trafo_p_mw[d.area.trafo]
                      for d in lv]),
            np.array([ac.trafo_q_mvar[d.area.trafo] - base.trafo_q_mvar[d.area.trafo]
                      for d in lv]))


def run_region(setup: RegionSetup, request_mw: float, *, max_rounds: int = 3,
               grid_name: str = "region", exchange: SignedExchange | None = None,
               time_limit_s: float | None = None, mip_rel_gap: float = 1e-6,
               privacy: str = "full", max_cuts: int = 200, seed: int = 0,
               previous: RegionReport | None = None, policy: FramePolicy | None = None,
               refinement: RefinementPolicy | None = None) -> RegionReport:
    """Clear, check in AC, refine until AC-safe and within the Table 1 RMSE on the relevant
    rows, at most ``max_rounds`` refinements, then dispatch by the safety rule.
    ``exchange``: packages cross as signed folders, checked by the TSO before clearing.
    ``privacy``: ``"full"`` (format 1, the TSO gets every DSO's linear model) or
    ``"exact"`` (format 2 with lazily published rows and links,
    :mod:`flexcore.region.publish`; the same optimum; at most ``max_cuts`` clearings per
    round; each DSO shuffles its rows and columns from its own secret and ``seed``).
    ``previous``: the report of the frame before on the same DSOs (their round-0 packages
    of this frame already made): this frame starts from it as ``policy`` says
    (:class:`~flexcore.region.dsos.FramePolicy`, the agents' policy; default its
    defaults): the carried sides and links, the warm points at its dispatch.

    ``refinement``: the round policy (:class:`flexcore.dso.refinement.RefinementPolicy`,
    the single DSO's; None: its defaults with ``max_rounds``; its ``max_rounds`` replaces
    ``max_rounds``), as the co-simulation's agents apply it: packages are published with
    the solver margin (``solver_margin``); after a round, every DSO whose AC check shows
    violated rows shifts them by the observed mismatch (``tighten_unsafe``,
    :meth:`~flexcore.region.dsos.LVDso.tighten`), an active LV DSO whose check is unsafe
    or inaccurate adds a point at its activation and the MV DSO one at the injections;
    the frame ends when every check is safe and accurate, after ``max_rounds`` or when the
    AC power flow or a clearing fails; then :func:`~flexcore.exchange.dispatch.
    choose_dispatch` (``keep_cheapest_safe``, ``dispatch_unsafe``) names the round
    dispatched, or none (the grid stays at zero set-points). Accuracy is the region's
    Table 1 rule (the policy's MAE tolerances are the single DSO's)."""
    if privacy not in PRIVACY_LEVELS:
        raise ValueError(f"privacy must be one of {PRIVACY_LEVELS}, got {privacy!r}")
    policy = policy or FramePolicy()
    pol = refinement if refinement is not None else RefinementPolicy(max_rounds=max_rounds)
    for d in setup.lv:
        d.solver_margin = pol.solver_margin
    if setup.mv is not None:
        setup.mv.solver_margin = pol.solver_margin
    t0 = time.perf_counter()
    base = setup.grid.run(setup.bid_bus, np.zeros(len(setup.bid_bus)))
    t_clear = t_ac = 0.0
    rounds = 0
    history: list[dict[str, Any]] = []
    #: per round: clearing, AC, LV checks, MV check (the rounds with a solution)
    checked: dict[int, tuple[RegionClearing, RegionAC, list[RowCheck], RowCheck]] = {}
    outcomes: list[RoundOutcome] = []
    tightened = {d.name: 0 for d in setup.lv} | {MV_NAME: 0}
    pub: LazyPublication | None = None
    warm: tuple[str, ...] = ()     # the last clearing's full areas: the next one's start
    basis: LpBasis | None = None   # ... and its LP relaxation's basis (clear_region(warm=))
    if previous is not None and previous.dispatch is not None:
        last = previous.dispatch
        for d in setup.lv:
            policy.warm_lv(d, last.activation_mw.get(d.name), last.slack_dv_pu.get(d.name))
        if setup.mv is not None:
            policy.warm_mv(setup.mv, injections(setup.lv, last), previous.draw_change)
    if previous is not None:
        if policy.carry_frames:
            pub = previous.published
        if previous.last_clearing is not None:
            warm = previous.last_clearing.full_names or warm
    while True:
        t1 = time.perf_counter()
        if privacy == "exact":
            pub = LazyPublication.start(setup, request_mw, seed, previous=pub,
                                        per_cut=policy.cut_sides)
            while True:
                pk: list[AreaPackage] = pub.area_packages(setup)
                mv_pkg: Any = pub.mv_package
                if exchange is not None:
                    pk, mv_pkg = exchange(pk, mv_pkg)
                clearing = clear_region(pk, request_mw, mv=mv_pkg, time_limit_s=time_limit_s,
                                        mip_rel_gap=mip_rel_gap, warm_full=warm,
                                        warm=basis)
                warm = clearing.full_names or warm
                basis = clearing.lp_basis or basis
                if not clearing.ok or not pub.check(setup, clearing) \
                        or pub.clearings >= max_cuts:
                    break
            if clearing.ok:
                pub.predict(setup, clearing)
        else:
            pk = area_packages(setup.lv, setup.mv)
            mv_pkg = setup.mv.published() if setup.mv is not None else None
            if exchange is not None:
                pk, mv_pkg = exchange(pk, mv_pkg)
            clearing = clear_region(pk, request_mw, mv=mv_pkg, time_limit_s=time_limit_s,
                                    mip_rel_gap=mip_rel_gap, warm_full=warm,
                                    warm=basis)
            warm = clearing.full_names or warm
            basis = clearing.lp_basis or basis
        t2 = time.perf_counter()
        t_clear += t2 - t1
        if not clearing.ok:
            outcomes.append(RoundOutcome(rounds, clearing.status, False))
            history.append({"round": rounds, "status": clearing.status.value,
                            "clearing_s": t2 - t1})
            break
        ac, checks, mvc = _evaluate(setup, clearing, base)
        t_ac += time.perf_counter() - t2
        all_checks = checks + [mvc]
        safe = ac.converged and not any(c.violations for c in all_checks)
        accurate = all(within_table1(c) for c in all_checks)
        checked[rounds] = (clearing, ac, checks, mvc)
        outcomes.append(RoundOutcome(rounds, clearing.status, safe, clearing.cost_eur_per_h))
        history.append({
            "round": rounds, "status": clearing.status.value,
            "cost_eur_per_h": clearing.cost_eur_per_h, "ac_converged": ac.converged,
            "ac_safe": safe, "violations": sum(c.violations for c in all_checks),
            "max_vm_err_pu": max(c.max_vm_err_pu for c in all_checks),
            "max_loading_err_percent": max(c.max_loading_err_percent for c in all_checks),
            "binding_mv_rows": mvc.n_binding_vm + mvc.n_binding_loading,
            "binding_lv_rows": sum(c.n_binding_vm + c.n_binding_loading for c in checks),
            "mv_vm_max_pu": mvc.vm_max_pu, "mv_max_abs_loading_percent":
                mvc.max_abs_loading_percent, "clearing_s": t2 - t1, "rows_tightened": 0,
            **({"published": pub.summary()} if pub is not None else {})})
        if (safe and accurate) or rounds >= pol.max_rounds or not ac.converged:
            break
        rounds += 1
        n_tight = 0
        for d, c in zip(setup.lv, checks):
            x = clearing.activation_mw[d.name]
            vm, ld = violated_rows(setup.region.lv_limits, d.package, d.lin.keymap, ac, base)
            n = d.next_round(clearing.points[d.name], x, clearing.slack_dv_pu.get(d.name)
                             if setup.mv is not None else None, ac_vm_pu=vm,
                             ac_loading_percent=ld, limits=setup.region.lv_limits,
                             tighten_unsafe=pol.tighten_unsafe,
                             refine=bool(np.any(np.abs(x) > 1e-9)) and (
                                 c.violations > 0 or not within_table1(c)),
                             slack_vm_pu=ac.vm_pu[d.area.mv_bus])
            tightened[d.name] += n
            n_tight += n
        if setup.mv is not None:
            y = injections(setup.lv, clearing)
            if mvc.violations and pol.tighten_unsafe and clearing.mv_point is not None:
                vm, ld = violated_rows(setup.region.mv_limits, setup.mv.package,
                                       setup.mv.lin.keymap, ac, base)
                n = setup.mv.tighten(clearing.mv_point, y, ac_vm_pu=vm, ac_loading_percent=ld,
                                     limits=setup.region.mv_limits).n
                tightened[MV_NAME] += n
                n_tight += n
            setup.mv.refine(y, draw_p_mw=np.array([ac.trafo_p_mw[d.area.trafo]
                                                    for d in setup.lv]),
                            draw_q_mvar=np.array([ac.trafo_q_mvar[d.area.trafo]
                                                  for d in setup.lv]))
        history[-1]["rows_tightened"] = n_tight
    choice = choose_dispatch(outcomes, keep_cheapest_safe=pol.keep_cheapest_safe,
                             dispatch_unsafe=pol.dispatch_unsafe)
    last_clearing = clearing
    last_ac = checked[rounds][1] if rounds in checked else None
    if choice.round is not None:
        clearing, ac, checks, mvc = checked[choice.round]
        grid_ac = ac
    else:   # nothing dispatched: the grid stays at zero set-points
        if checked:
            _, ac, checks, mvc = checked[max(checked)]
        else:
            ac, checks, mvc = RegionAC(False, {}, {}, math.nan), \
                [RowCheck()] * len(setup.lv), RowCheck()
        grid_ac = base
    dispatched = choice.round is not None
    areas = []
    for d, c in zip(setup.lv, checks):
        x = clearing.activation_mw.get(d.name, np.zeros(len(d.bids))) if dispatched \
            else np.zeros(len(d.bids))
        areas.append(AreaReport(setup.area_name(d), len(d.bids), float(x.sum()),
                                float(np.abs(x) @ d.bids.price_eur_per_mwh), d.rounds,
                                clearing.points.get(d.name), clearing.slack_dv_pu.get(d.name,
                                                                                      0.0), c,
                                tightened[d.name]))
    mv_rep = AreaReport("mv", 0, float(sum(a.delivered_mw for a in areas)), 0.0,
                        setup.mv.rounds if setup.mv is not None else 0, clearing.mv_point, 0.0,
                        mvc, tightened[MV_NAME])
    all_checks = [a.check for a in areas] + [mvc]
    return RegionReport(
        grid=grid_name, request_mw=float(request_mw), status=choice.verdict.value,
        cost_eur_per_h=clearing.cost_eur_per_h if dispatched else math.nan, rounds=rounds,
        ac_converged=ac.converged,
        ac_safe=ac.converged and not any(c.violations for c in all_checks),
        delivered_at_interface_mw=base.ext_grid_p_mw - grid_ac.ext_grid_p_mw,
        max_vm_err_pu=max(c.max_vm_err_pu for c in all_checks),
        max_loading_err_percent=max(c.max_loading_err_percent for c in all_checks),
        relevant_rows=sum(c.n_relevant_vm + c.n_relevant_loading for c in all_checks),
        areas=areas, mv=mv_rep, ac=grid_ac, history=history, published=pub, privacy=privacy,
        dispatch=clearing if dispatched else None,
        draw_change=_draw_change(setup.lv, base, grid_ac) if dispatched and grid_ac.converged
        else None,
        binding_mv_rows=mvc.n_binding_vm + mvc.n_binding_loading,
        binding_lv_rows=sum(c.n_binding_vm + c.n_binding_loading for c in checks),
        times_s={**setup.times_s, "clearing": t_clear, "region_ac": t_ac,
                 "total_run": time.perf_counter() - t0},
        clearing={"message": clearing.message, "columns": clearing.columns, "rows": clearing.rows,
                  "binaries": clearing.binaries, "build_time_s": clearing.build_time_s,
                  "solve_time_s": clearing.solve_time_s},
        dispatched=dispatched, dispatched_round=choice.round, message=choice.message,
        last_clearing=last_clearing, last_ac=last_ac)


def within_table1(c: RowCheck) -> bool:
    """Errors within the source's Table 1 RMSE on the relevant rows."""
    return c.max_vm_err_pu <= TABLE1_VM_PU and c.max_loading_err_percent <= \
        TABLE1_LOADING_PERCENT
