"""The region's safety rule: the single DSO's refinement policy (solver margin, tightening
of the rows AC violates, which round is dispatched) in the in-process study
(:func:`flexcore.region.study.run_region`) and the co-simulation's agents; every
dispatched clearing checked in an independent pandapower AC power flow of the whole region.

The case: a 4-area region whose MV upper voltage limit (1.0515 p.u.) binds; its first
clearing is AC-safe but inaccurate, the refined one (round 1) sits on the limit and AC puts
the row 1e-6 p.u. past it (the MV DSO's linear model misses the areas' loss changes)."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pandapower as pp
import pytest

from agents.region_tso import RegionTSO
from flexcore.dso.refinement import RefinementPolicy
from flexcore.exchange.dispatch import RoundOutcome, choose_dispatch
from flexcore.exchange.enums import ClearingStatus, FrameVerdict
from flexcore.exchange.limits import Limits
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import small_region

VM_MAX = 1.0515
SHARE = 0.5
OPT, INF = ClearingStatus.OPTIMAL, ClearingStatus.INFEASIBLE


@pytest.fixture(scope="module")
def case():
    net = small_region(n_lv=4)
    net.ext_grid["vm_pu"] = 1.05
    region = split_region(net, source="small")
    region = replace(region, mv_limits=Limits(vm_min_pu=0.965, vm_max_pu=VM_MAX))
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    return region, bids, SHARE * sum(b.volume_mw.sum() for b in bids.values())


def _run(case, **policy):
    region, bids, request = case
    setup = setup_region(region, bids, secret="safety")
    rep = run_region(setup, request, mip_rel_gap=1e-7, refinement=RefinementPolicy(**policy))
    return setup, rep


def _pandapower(region, bids, activation: dict[str, np.ndarray] | None):
    """The whole region in pandapower with ``activation`` (by area, None: nothing) as sgens:
    (MV bus voltages, LV bus voltages, largest line/trafo loading %)."""
    net = copy.deepcopy(region.net)
    for name, b in bids.items():
        x = np.zeros(len(b.ids)) if activation is None else activation[name]
        pp.create_sgens(net, b.bus, p_mw=x)
    pp.runpp(net, tolerance_mva=1e-10)
    mv = net.bus.vn_kv >= 1.0
    return (net.res_bus.vm_pu[mv].to_numpy(), net.res_bus.vm_pu[~mv].to_numpy(),
            max(net.res_line.loading_percent.max(), net.res_trafo.loading_percent.max()),
            float(net.res_ext_grid.p_mw.sum()))


def _activation(setup, rep) -> dict[str, np.ndarray]:
    """The dispatched activation by private area name (the study's ids are public)."""
    return {setup.area_name(d): rep.dispatch.activation_mw[d.name] for d in setup.lv}


def _assert_safe_in_pandapower(region, bids, activation) -> None:
    mv, lv, loading, _ = _pandapower(region, bids, activation)
    assert mv.max() <= VM_MAX + 1e-6 and mv.min() >= 0.965 - 1e-6
    assert lv.max() <= 1.10 + 1e-6 and lv.min() >= 0.90 - 1e-6
    assert loading <= 100.0 + 1e-4


# --------------------------------------------------------------------------- the rule
def test_choose_dispatch_by_hand():
    r = [RoundOutcome(0, OPT, True, 10.0), RoundOutcome(1, OPT, True, 9.0),
         RoundOutcome(2, OPT, False, 8.0)]
    # the last round safe: it, whatever the cost
    c = choose_dispatch([*r[:2], RoundOutcome(2, OPT, True, 11.0)])
    assert (c.verdict, c.round) == (FrameVerdict.OPTIMAL, 2)
    # last unsafe: the cheapest safe earlier round; ties go to the later round
    assert choose_dispatch(r).round == 1
    assert choose_dispatch([RoundOutcome(0, OPT, True, 9.0), *r[1:]]).round == 1
    # ... not without keep_cheapest_safe: unsafe, nothing (or the last, dispatch_unsafe)
    c = choose_dispatch(r, keep_cheapest_safe=False)
    assert (c.verdict, c.round, c.dispatched) == (FrameVerdict.UNSAFE, None, False)
    c = choose_dispatch(r, keep_cheapest_safe=False, dispatch_unsafe=True)
    assert (c.verdict, c.round) == (FrameVerdict.UNSAFE, 2)
    # the last clearing infeasible (after tightening): an earlier safe round, else its status
    assert choose_dispatch([r[0], RoundOutcome(1, INF, False)]).round == 0
    c = choose_dispatch([RoundOutcome(0, OPT, False, 1.0), RoundOutcome(1, INF, False)],
                        dispatch_unsafe=True)
    assert (c.verdict, c.round) == (FrameVerdict.INFEASIBLE, None)


def test_the_region_tso_defaults_are_the_refinement_policy_defaults():
    tso = RegionTSO()
    tso.create(1, "TSO", request_mw=[1.0])
    pol = RefinementPolicy()
    assert tso.keep_cheapest_safe == pol.keep_cheapest_safe
    assert tso.dispatch_unsafe == pol.dispatch_unsafe


# --------------------------------------------------------------------------- the study
def test_an_unsafe_last_round_dispatches_the_cheapest_safe_one(case):
    region, bids, _ = case
    setup, rep = _run(case, max_rounds=1, tighten_unsafe=False)
    assert [h["ac_safe"] for h in rep.history] == [True, False]
    assert rep.history[1]["violations"] == 1
    assert rep.status == "optimal" and rep.dispatched and rep.dispatched_round == 0
    assert rep.cost_eur_per_h == pytest.approx(rep.history[0]["cost_eur_per_h"], rel=1e-12)
    assert rep.ac_safe and rep.mv.check.violations == 0
    # the last round's clearing is kept for the record, not dispatched
    assert rep.last_clearing is not rep.dispatch
    _assert_safe_in_pandapower(region, bids, _activation(setup, rep))
    # the unsafe round really violates the MV limit in pandapower
    act = {setup.area_name(d): rep.last_clearing.activation_mw[d.name] for d in setup.lv}
    assert _pandapower(region, bids, act)[0].max() > VM_MAX + 1e-6


def test_no_safe_round_is_unsafe_and_nothing_is_dispatched(case):
    region, bids, request = case
    setup, rep = _run(case, max_rounds=1, tighten_unsafe=False, keep_cheapest_safe=False)
    assert rep.status == FrameVerdict.UNSAFE and not rep.dispatched
    assert rep.dispatched_round is None and rep.dispatch is None
    assert math.isnan(rep.cost_eur_per_h) and rep.delivered_at_interface_mw == 0.0
    assert all(a.delivered_mw == 0.0 for a in rep.areas) and "AC-unsafe" in rep.message
    # the report's AC state is the region at zero set-points, as in pandapower
    mv, _, _, p_ext = _pandapower(region, bids, None)
    assert rep.ac.ext_grid_p_mw == pytest.approx(p_ext, abs=1e-7)
    assert max(rep.ac.vm_pu[b] for b in region.mv_net.bus.index) == pytest.approx(
        mv.max(), abs=1e-8)
    # with dispatch_unsafe the last round goes out anyway, still called unsafe
    _, rep = _run(case, max_rounds=1, tighten_unsafe=False, keep_cheapest_safe=False,
                  dispatch_unsafe=True)
    assert rep.status == "unsafe" and rep.dispatched and rep.dispatched_round == 1
    assert not rep.ac_safe


def test_the_violated_row_is_tightened_and_the_next_round_is_safe(case):
    """Round 1 violates one MV row; the MV DSO shifts it by the observed mismatch (its
    package then predicts the AC value at that clearing); round 2 is AC-safe in
    pandapower and dispatched."""
    region, bids, request = case
    setup = setup_region(region, bids, secret="safety")
    rep1 = run_region(setup, request, mip_rel_gap=1e-7,
                      refinement=RefinementPolicy(max_rounds=1, keep_cheapest_safe=False))
    c, ac = rep1.last_clearing, rep1.last_ac
    mv = setup.mv
    before = mv.package
    from flexcore.region.study import violated_rows

    base = setup.grid.run(setup.bid_bus, np.zeros(len(setup.bid_bus)))
    vm, ld = violated_rows(region.mv_limits, mv.package, mv.lin.keymap, ac, base)
    assert len(vm) == 1 and not ld
    y = np.array([c.activation_mw[d.name].sum() for d in setup.lv])
    rep = mv.tighten(c.mv_point, y, ac_vm_pu=vm, ac_loading_percent=ld,
                     limits=region.mv_limits)
    assert rep.n == 1
    (key, value), = vm.items()
    r = mv.package.vm_rows.index(key)
    pred = mv.package.predict(c.mv_point, y)[0][r]
    assert pred == pytest.approx(value, abs=1e-12)
    assert before.predict(c.mv_point, y)[0][r] < value - 1e-6

    # the whole loop: round 1 tightened, round 2 safe and dispatched
    setup, rep = _run(case, max_rounds=2)
    assert [h["ac_safe"] for h in rep.history] == [True, False, True]
    assert rep.history[1]["rows_tightened"] == 1 and rep.mv.rows_tightened == 1
    assert rep.status == "optimal" and rep.dispatched_round == 2 and rep.ac_safe
    _assert_safe_in_pandapower(region, bids, _activation(setup, rep))


# --------------------------------------------------------------------------- co-simulation
def _cosim(case, tmp_path, monkeypatch, refinement: RefinementPolicy, privacy: str):
    """The co-simulation of the case (one frame, all agents in this process, so that the
    case's MV limit is the one the agents and the grid read from ``flexcore.region.split``)."""
    import flexcore.region.split as split
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region, bids, _ = case
    monkeypatch.setattr(split, "MV_LIMITS", region.mv_limits)
    cfg = RegionConfig(grid="small", request_share=SHARE, max_rounds=refinement.max_rounds,
                       mip_rel_gap=1e-7, time_limit_s=60.0, privacy=privacy, audit=False)
    return run_region_cosim(cfg, CosimOptions(frames=1, starter="python",
                                              refinement=refinement),
                            out=tmp_path / privacy, region=region, bids=bids)


@pytest.mark.slow
@pytest.mark.parametrize("privacy", ["exact", "full"])
def test_cosim_tightens_and_dispatches_what_the_study_does(case, tmp_path, monkeypatch,
                                                          privacy):
    """Exact: the DSO tightens its own package before its publisher derives the format-2
    sides from it. The same rounds, tightened row and dispatch as the study."""
    pol = RefinementPolicy(max_rounds=2)
    res = _cosim(case, tmp_path, monkeypatch, pol, privacy)
    region, bids, request = case
    rep = run_region(setup_region(region, bids, secret="safety"), request, mip_rel_gap=1e-7,
                     refinement=pol, privacy=privacy)
    row = res.frames[0]
    assert row["status"] == rep.status == "optimal" and row["dispatched"]
    assert row["dispatched_round"] == rep.dispatched_round == 2 and row["rounds"] == 2
    assert row["rows_tightened"] == 1
    assert row["ac_violations"] == 0 and row["dso_violations"] == 0
    assert row["cost_eur_per_h"] == pytest.approx(rep.cost_eur_per_h, rel=1e-6)
    assert row["delivered_at_interface_mw"] == pytest.approx(rep.delivered_at_interface_mw,
                                                             abs=1e-6)
    assert sum(a["rows_tightened"] for a in res.areas) == 1


def test_cosim_unsafe_frame_leaves_the_grid_at_zero(case, tmp_path, monkeypatch):
    pol = RefinementPolicy(max_rounds=1, tighten_unsafe=False, keep_cheapest_safe=False)
    res = _cosim(case, tmp_path, monkeypatch, pol, "exact")
    row = res.frames[0]
    assert row["status"] == "unsafe" and not row["dispatched"]
    assert row["dispatched_round"] is None and row["rounds"] == 1
    assert math.isnan(row["cost_eur_per_h"]) and row["delivered_mw"] == 0.0
    # the grid ended the frame at zero set-points (its last AC record): nothing delivered,
    # nothing violated; the DSOs' check of the last round saw the violation
    assert row["ac_converged"] and row["ac_violations"] == 0
    assert row["delivered_at_interface_mw"] == pytest.approx(0.0, abs=1e-8)
    assert row["dso_violations"] == 1
