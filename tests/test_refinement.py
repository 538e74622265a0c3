"""The DSO's round policy (RefinementSession), its re-linearisation schedule, the typed
DSO/TSO messages and the shared power-flow session, without mosaik.

Oracles: pandapower AC power flows of a fresh copy of the grid (activation as sgens), the
real MILP clearing (flexcore.market.clear) and hand-checked schedule decisions.
"""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandapower as pp
import pytest

from flexcore.district.buildings import load_building_table
from flexcore.dso import (
    Linearizer,
    RefinementPolicy,
    RefinementSession,
    RelinearizationSchedule,
    Verdict,
)
from flexcore.exchange.enums import FrameVerdict
from flexcore.exchange.limits import Limits
from flexcore.exchange.messages import (
    ClearingMessage,
    MessageError,
    PackageMessage,
    VerdictMessage,
    from_wire,
)
from flexcore.grid import grids
from flexcore.grid.powerflow import PowerFlowSession
from flexcore.market import clear
from flexcore.study.bidgen import synthetic_bids
from flexcore.study.coordination import coordinate

REQUEST_MW = 1.8
TOL_VM_PU, TOL_LOADING_PERCENT = 1e-5, 5e-3


@pytest.fixture(scope="module")
def setup():
    net = grids.load_grid("bergwald")
    bids = synthetic_bids(net, seed=1, table=load_building_table())
    lin = Linearizer(net, bids, salt="refine-test")
    return net, bids, lin, lin.linearize((0.0, 0.5, 1.0)).package


def _drive(lin, bids, package, request_mw, policy):
    """The frame loop as the agents run it: clear, hand the clearing to the session."""
    session = RefinementSession(lin, policy=policy)
    step = session.open(package)
    while not isinstance(step, Verdict):
        step = session.on_clearing(clear(step, bids.without_bus(), request_mw))
    return session, step


def _ac_oracle(net, bids, activation):
    """Voltages (by bus) and max |loading| of a fresh pandapower power flow."""
    work = copy.deepcopy(net)
    for bus, p in zip(bids.bus, activation):
        pp.create_sgen(work, int(bus), p_mw=float(p))
    pp.runpp(work)
    return work.res_bus.vm_pu, max(work.res_line.loading_percent.max(),
                                   work.res_trafo.loading_percent.max())


def test_accurate_at_round_zero_stops_at_zero(setup):
    net, bids, lin, pkg = setup
    session, v = _drive(lin, bids, pkg, 0.0, RefinementPolicy(max_rounds=2))
    assert v.verdict == FrameVerdict.OPTIMAL and v.safe and v.dispatch and v.rounds == 0
    assert len(session.records) == 1 and session.package is pkg  # nothing refined
    # zero activation at the zero point: the linear estimate is the AC power flow itself
    assert v.validation.vm_mae_pu < 1e-12 and v.validation.loading_mae_percent < 1e-9
    vm, _ = _ac_oracle(net, bids, np.zeros(len(bids)))
    for key, ac in v.validation.ac_vm_pu.items():
        assert ac == pytest.approx(vm[lin.keymap.vm_pu[key]], abs=1e-9)


def test_refinement_reaches_tolerance_within_two_rounds_like_coordinate(setup):
    net, bids, lin, pkg = setup
    policy = RefinementPolicy(max_rounds=2, tol_vm_mae_pu=TOL_VM_PU,
                              tol_loading_mae_percent=TOL_LOADING_PERCENT)
    session, v = _drive(lin, bids, pkg, REQUEST_MW, policy)
    first = session.records[0].validation
    assert first.vm_mae_pu > TOL_VM_PU  # the fixed points alone are not accurate enough
    assert 1 <= v.rounds <= 2 and v.verdict == FrameVerdict.OPTIMAL and v.dispatch
    assert v.validation.vm_mae_pu <= TOL_VM_PU
    assert v.validation.loading_mae_percent <= TOL_LOADING_PERCENT
    assert session.package.m == pkg.m + v.rounds
    assert session.package.points[-1].label == f"refine {v.rounds}"
    # the same policy through coordinate(): the same rounds, clearing and errors
    res = coordinate(lin, bids, REQUEST_MW, package=pkg, max_rounds=2,
                     tol_vm_mae_pu=TOL_VM_PU, tol_loading_mae_percent=TOL_LOADING_PERCENT)
    assert [r.round for r in res.rounds] == [r.round for r in session.records]
    assert res.safe and res.verdict.verdict == v.verdict
    x = v.clearing.activation_vector(bids.ids)
    np.testing.assert_allclose(res.activation(bids.ids), x, atol=1e-9)
    assert res.rounds[-1].vm_mae_pu == pytest.approx(v.validation.vm_mae_pu, rel=1e-9)
    # oracle: a fresh AC power flow at the dispatched activation keeps every limit and
    # matches the DSO's AC values
    assert x.sum() == pytest.approx(REQUEST_MW, abs=1e-6)
    vm, max_loading = _ac_oracle(net, bids, x)
    assert 0.95 - 1e-9 <= vm.min() and vm.max() <= 1.05 + 1e-9 and max_loading <= 100 + 1e-6
    for key, ac in v.validation.ac_vm_pu.items():
        assert ac == pytest.approx(vm[lin.keymap.vm_pu[key]], abs=1e-9)


def test_without_early_stop_refines_max_rounds(setup):
    _, bids, lin, pkg = setup
    session, v = _drive(lin, bids, pkg, 0.0, RefinementPolicy(max_rounds=2,
                                                              stop_when_accurate=False))
    assert [r.round for r in session.records] == [0, 1, 2] and v.rounds == 2
    assert v.verdict == FrameVerdict.OPTIMAL


def test_dso_predicts_from_its_own_package(setup):
    """The AC check does not rely on the clearing's predicted rows (a later privacy step
    drops them): the DSO recomputes them from the package it published."""
    _, bids, lin, pkg = setup
    r = clear(pkg, bids.without_bus(), REQUEST_MW)
    stripped = dataclasses.replace(r, predicted_vm_pu={}, predicted_loading_percent={})
    own = lin.validate(stripped, package=pkg)
    told = lin.validate(r)
    assert own.n_vm_rows == len(pkg.vm_rows) and own.n_loading_rows == len(pkg.loading_rows)
    assert own.vm_mae_pu == told.vm_mae_pu and own.loading_mae_percent == told.loading_mae_percent
    # validate() takes an array with explicit predictions as before
    arr = lin.validate(r.activation_vector(bids.ids), predicted_vm_pu=r.predicted_vm_pu,
                       predicted_loading_percent=r.predicted_loading_percent)
    assert arr.vm == told.vm and arr.loading == told.loading


@pytest.mark.parametrize("dispatch_unsafe", [False, True])
def test_max_rounds_reached_with_ac_violation_is_unsafe(setup, dispatch_unsafe):
    """A package with limits far looser than the grid's (e.g. a wrong one): every clearing
    breaks an AC limit, so the last round's verdict is ``unsafe``."""
    net, bids, lin, pkg = setup
    loose = dataclasses.replace(pkg, limits=Limits(vm_max_pu=1.2, loading_min_percent=-1e3,
                                                   loading_max_percent=1e3))
    session, v = _drive(lin, bids, loose, REQUEST_MW,
                        RefinementPolicy(max_rounds=1, dispatch_unsafe=dispatch_unsafe))
    assert v.rounds == 1 and len(session.records) == 2
    assert v.verdict == FrameVerdict.UNSAFE and not v.safe and v.dispatch is dispatch_unsafe
    assert "violated after 1 refinement round" in v.message
    worst = v.validation.violations[0]
    vm, max_loading = _ac_oracle(net, bids, v.clearing.activation_vector(bids.ids))
    assert vm.max() > 1.05 or max_loading > 100.0
    if worst.kind == "vm_pu":
        assert worst.value == pytest.approx(vm[lin.keymap.vm_pu[worst.key]], abs=1e-6)


def test_infeasible_clearing_passes_through(setup):
    _, bids, lin, pkg = setup
    session, v = _drive(lin, bids, pkg, 1e3, RefinementPolicy())
    assert v.verdict == FrameVerdict.INFEASIBLE and not v.dispatch and v.validation is None
    assert v.message and len(session.records) == 1
    failed = RefinementSession.failed("")
    assert failed.verdict == FrameVerdict.DSO_FAILED and failed.message


# --------------------------------------------------------------------------- schedule
def test_schedule_every_n_frames_new_day_and_threshold():
    s = RelinearizationSchedule(every_frames=4, threshold_mw=0.5)
    fix = np.array([1.0, -2.0])
    d = s.decide(0, fix, new_day=True)
    assert d.due and d.reason == "first" and d.moved_mw == np.inf
    s.done(0, fix)
    d = s.decide(1, fix + [0.2, -0.2], new_day=False)
    assert not d.due and d.moved_mw == pytest.approx(0.4)
    d = s.decide(2, fix + [0.3, 0.3], new_day=False)  # 0.6 MW > 0.5
    assert d.due and d.reason == "moved"
    d = s.decide(3, fix, new_day=True)
    assert d.due and d.reason == "new_day"
    assert s.decide(4, fix, new_day=False).reason == "every"  # 4 frames after frame 0
    s.done(4, fix)
    assert not s.decide(5, fix, new_day=False).due
    assert not s.decide(7, fix + 0.25, new_day=False).due  # exactly 0.5 MW: not more
    assert s.decide(8, fix, new_day=False).due


def test_schedule_keeps_last_success_after_a_failed_frame():
    s = RelinearizationSchedule(every_frames=96, threshold_mw=1.0)
    assert s.decide(0, np.zeros(2), new_day=False).due
    # frame 0's linearisation failed (done() not called): still due at frame 1
    assert s.decide(1, np.zeros(2), new_day=False).reason == "first"


# --------------------------------------------------------------------------- messages
def test_messages_round_trip_through_json(setup, tmp_path):
    _, bids, _, pkg = setup
    r = clear(pkg, bids.without_bus(), REQUEST_MW)
    msg = ClearingMessage(3, 1, r)
    back = from_wire(json.loads(json.dumps(msg.to_wire())))
    assert back == msg and back.clearing.activation_vector(pkg.columns).sum() == \
        pytest.approx(REQUEST_MW, abs=1e-6)
    v = VerdictMessage(3, 1, FrameVerdict.UNSAFE, safe=False, dispatch=False, message="x")
    assert from_wire(json.loads(json.dumps(v.to_wire()))) == v
    from flexcore.exchange.package import save_package

    path = save_package(pkg, tmp_path / "r0")
    p = from_wire(json.loads(json.dumps(PackageMessage(3, 0, path=str(path)).to_wire())))
    assert p.load().columns == pkg.columns and np.array_equal(p.load().vtdf, pkg.vtdf)
    assert from_wire(PackageMessage(3, 0, package=pkg).to_wire()).load() is pkg
    with pytest.raises(MessageError, match="unknown message kind"):
        from_wire({"kind": "hello", "frame": 0, "round": 0})
    with pytest.raises(MessageError, match="either the package or its path"):
        PackageMessage(0, 0)


# --------------------------------------------------------------------------- power flow
def test_power_flow_session_recycles_skips_and_reports_non_convergence(setup):
    net = copy.deepcopy(setup[0])
    ref = copy.deepcopy(net)
    session = PowerFlowSession(net)
    assert session.run() and session.solved
    assert session.run() and session.last_time_s == 0.0  # already holds the result
    for scale in (1.3, 0.7):
        net.load["p_mw"] = ref.load.p_mw * scale
        session.changed()
        assert session.run()  # recycled
        fresh = copy.deepcopy(ref)
        fresh.load["p_mw"] = ref.load.p_mw * scale
        pp.runpp(fresh)
        np.testing.assert_allclose(net.res_bus.vm_pu, fresh.res_bus.vm_pu, atol=1e-9)
    net.load["p_mw"] = ref.load.p_mw * 1e3  # no solution
    session.changed()
    assert session.run() is False and not session.solved
    net.load["p_mw"] = ref.load.p_mw
    session.changed()
    assert session.run()
    pp.runpp(ref)
    np.testing.assert_allclose(net.res_bus.vm_pu, ref.res_bus.vm_pu, atol=1e-9)


def test_session_dispatches_the_cheapest_safe_round_and_refuses_with_a_reason(setup):
    """Hand-checkable policy: with a tiny voltage band every clearing is unsafe, so the
    session refuses (no dispatch) with the AC reason; the rows it tightened are recorded."""
    net, bids, lin, pkg = setup
    tight = Linearizer(net, bids, salt="refine-test",
                       limits=Limits(vm_min_pu=0.999, vm_max_pu=1.001))
    session, v = _drive(tight, bids, tight.linearize((0.0, 0.5, 1.0)).package, REQUEST_MW,
                        RefinementPolicy(max_rounds=1))
    assert not v.dispatch and not v.safe
    assert v.message
    # the published package carries the solver margin; the DSO's own one does not
    assert session.published().limits.vm_min_pu == pytest.approx(0.999 + 1e-6)
    assert session.package.limits.vm_min_pu == 0.999


def test_ac_check_from_arrays_equals_the_check_from_row_dicts(setup):
    """The DSO's fast paths of the AC check (predictions from its package as arrays; the
    zero frame's AC values over every row as arrays) give the report of the per-row dicts,
    field by field."""
    _, bids, lin, pkg = setup
    r = clear(pkg, bids.without_bus(), REQUEST_MW)
    stripped = dataclasses.replace(r, predicted_vm_pu={}, predicted_loading_percent={})
    own = lin.validate(stripped, package=pkg)
    told = lin.validate(r)  # the clearing's predictions, as {row key: value}
    assert own.to_json() == told.to_json() and own.vm_errors and own.ac_loading_percent
    vm, lp = lin.power_flow(np.zeros(len(bids)))
    km = lin.keymap
    by_dict = lin.validate(np.zeros(len(bids)), predicted_vm_pu=dict(zip(km.vm_pu, vm + 1e-4)),
                           predicted_loading_percent=dict(zip(km.loading_percent, lp * 1.01)))
    by_array = lin.validate(np.zeros(len(bids)), predicted_vm_pu=vm + 1e-4,
                            predicted_loading_percent=lp * 1.01)
    assert by_array.to_json() == by_dict.to_json()
    assert by_array.vm_mae_pu == pytest.approx(1e-4, rel=1e-9)
