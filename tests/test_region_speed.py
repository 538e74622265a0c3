"""A new slack voltage or a new frame's loads are updates of a DSO's power-flow engine, not
rebuilds (the region co-simulation's speed): every updated result against a fresh
pandapower power flow / a freshly built DSO with the same inputs."""
from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pytest

from flexcore.dso.linearizer import Linearizer
from flexcore.grid.fastpf import FastPowerFlow, klu_available
from flexcore.grid.powerflow import ArrayPowerFlow
from flexcore.grid.sensitivity import signed_results
from flexcore.region.dsos import lv_dso, mv_dso
from flexcore.region.split import AREA_LOAD_PREFIX, LV_LIMITS, MV_LIMITS, split_region
from flexcore.region.study import region_bids
from tests.region_grid import small_region

ENGINES = ["scipy"] + (["klu"] if klu_available() else [])


@pytest.fixture(scope="module")
def region():
    return split_region(small_region(lv_buses=7), source="small")


@pytest.fixture(scope="module")
def bids(region):
    return region_bids(region, seed=3, share=(1.0, 3.0))


def _area_net(region):
    """The last LV area's model with one PV sgen (so sgens are tracked too)."""
    net = copy.deepcopy(region.areas[-1].net)
    pp.create_sgen(net, int(net.load.bus.iloc[2]), p_mw=0.015, name="pv")
    return net


def _pandapower(net, vm_pu, load_p, load_q, sgen_p):
    ref = copy.deepcopy(net)
    ref.ext_grid["vm_pu"] = vm_pu
    ref.load["p_mw"], ref.load["q_mvar"], ref.sgen["p_mw"] = load_p, load_q, sgen_p
    pp.runpp(ref, numba=False, tolerance_mva=1e-11)
    vm, ld, _ = signed_results(ref)
    return vm, ld, float(ref.res_ext_grid.p_mw.sum())


@pytest.mark.parametrize("engine", ENGINES)
def test_slack_voltage_update_equals_a_fresh_pandapower_power_flow(region, engine):
    net = _area_net(region)
    fast = FastPowerFlow(net, engine=engine)
    p0, q0 = net.load.p_mw.to_numpy(), net.load.q_mvar.to_numpy()
    s0 = net.sgen.p_mw.to_numpy()
    for vm_pu, scale in ((1.03, 1.0), (0.96, 1.6), (1.0, 0.4), (1.07, 1.2)):
        fast.set_slack_vm(vm_pu)
        res = fast.run(scale * p0, scale * q0, s0 / scale)
        vm, ld, p_slack = _pandapower(net, vm_pu, scale * p0, scale * q0, s0 / scale)
        assert res.converged
        assert np.abs(res.vm_pu - vm).max() <= 1e-9
        assert np.abs(res.loading_percent - ld).max() <= 1e-6
        assert res.p_slack_mw == pytest.approx(p_slack, abs=1e-8)
        # the slack bus holds the new set point; the engine was never re-initialised
        assert res.vm_pu[list(fast.bus_index).index(int(net.ext_grid.bus.iloc[0]))] \
            == pytest.approx(vm_pu, abs=1e-15)
        assert fast.reinit_count == 1
    assert float(fast.net.ext_grid.vm_pu.iloc[0]) == 1.07   # a later reinit sees it
    with pytest.raises(ValueError, match="not at a slack bus"):
        fast.net.ext_grid.at[fast.net.ext_grid.index[0], "bus"] = int(net.load.bus.iloc[0])
        fast.set_slack_vm(1.0)


@pytest.mark.parametrize("engine", ["fast", "pandapower"])
def test_array_power_flow_slack_update_both_engines(region, engine):
    net = _area_net(region)
    apf = ArrayPowerFlow(copy.deepcopy(net), engine=engine)
    apf.set_slack_vm(0.97)
    assert apf.run()
    vm, ld = apf.results()
    ref_vm, ref_ld, _ = _pandapower(net, 0.97, net.load.p_mw, net.load.q_mvar, net.sgen.p_mw)
    # pandapower's own engine converges to its default 1e-8 MVA only
    tol_vm, tol_ld = (1e-9, 1e-6) if engine == "fast" else (1e-8, 1e-5)
    assert np.abs(vm - ref_vm).max() <= tol_vm and np.abs(ld - ref_ld).max() <= tol_ld
    # the pandapower view of the session follows (net.res_* of the new set point)
    assert apf.sync_net().res_bus.vm_pu.to_numpy() == pytest.approx(
        _net_vm(net, 0.97), abs=1e-8)


def _net_vm(net, vm_pu):
    ref = copy.deepcopy(net)
    ref.ext_grid["vm_pu"] = vm_pu
    pp.runpp(ref, numba=False)
    return ref.res_bus.vm_pu.to_numpy()


def test_linearizer_slack_update_equals_a_fresh_linearizer(region, bids):
    area = region.areas[-1]
    b = bids[area.name]
    lin = Linearizer(area.net, b, salt="s")
    lin.linearize((0.0, 1.0))
    lin.set_slack_vm(1.04)
    got = lin.linearize((0.0, 0.5, 1.0)).package
    net = copy.deepcopy(area.net)
    net.ext_grid["vm_pu"] = 1.04
    want = Linearizer(net, b, salt="s").linearize((0.0, 0.5, 1.0)).package
    assert lin.slack_vm_pu == 1.04 and lin.pf._fast.reinit_count == 1
    assert got.vm_rows == want.vm_rows
    assert np.abs(got.vm_pu - want.vm_pu).max() <= 1e-9
    assert np.abs(got.loading_percent - want.loading_percent).max() <= 1e-6
    np.testing.assert_allclose(got.vtdf, want.vtdf, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got.ltdf, want.ltdf, rtol=1e-6, atol=1e-9)


def test_lv_dso_relinearize_equals_a_fresh_dso_and_repeats_for_free(region, bids):
    """A new frame (loads x 1.3, another slack voltage) on the kept DSO: the package of a
    freshly built DSO at the same inputs, the slack column included (its finite
    difference on the updated engine); the same inputs again: the same package, no
    power flow."""
    area = region.areas[-1]
    b = bids[area.name]
    d = lv_dso(area, b, limits=LV_LIMITS, salt=area.name)
    d.refine(0.5 * b.volume_mw, 1.01)
    assert d.rounds == 1 and d.package.m == 4
    net = copy.deepcopy(area.net)
    net.load["p_mw"] *= 1.3
    net.load["q_mvar"] *= 1.3
    net.ext_grid["vm_pu"] = 0.985
    d.relinearize((0.0, 0.5, 1.0), net=net, slack_vm_pu=0.985)
    fresh_area = copy.copy(area)
    fresh_area.net = net
    want = lv_dso(fresh_area, b, limits=LV_LIMITS, salt=area.name)
    assert d.rounds == 0 and d.package.m == 3
    got_pub, want_pub = d.published(), want.published()
    assert got_pub.columns == want_pub.columns and got_pub.vm_rows == want_pub.vm_rows
    assert np.abs(got_pub.vm_pu - want_pub.vm_pu).max() <= 1e-9
    assert np.abs(got_pub.loading_percent - want_pub.loading_percent).max() <= 1e-6
    np.testing.assert_allclose(got_pub.vtdf, want_pub.vtdf, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_pub.ltdf, want_pub.ltdf, rtol=1e-5, atol=1e-6)
    assert d.lin.pf._fast.reinit_count == 1
    # a refinement at another slack voltage: against a fresh DSO refined the same way
    d.refine(0.7 * b.volume_mw, 1.0)
    want.refine(0.7 * b.volume_mw, 1.0)
    np.testing.assert_allclose(d.published().vtdf, want.published().vtdf, rtol=1e-5,
                               atol=1e-9)
    assert d.lin.slack_vm_pu == 0.985          # back at the frame's set point
    # the same inputs again: the round-0 package without a power flow
    first = d._round0[1][0]
    solves = d.lin.pf._fast._solution_id
    d.relinearize((0.0, 0.5, 1.0), net=net, slack_vm_pu=0.985)
    assert d.package is first and d.rounds == 0 and d.lin.pf._fast._solution_id == solves


def test_mv_refinement_at_measured_draws_without_rebuild(region, bids):
    """The MV DSO's refinement at measured area draws (its area loads' P, Q updated in the
    engine's arrays) equals the point of a fresh linearizer on a model holding those
    draws; the loads are back afterwards."""
    names = list(bids)
    buses = [region.area(n).mv_bus for n in names]
    vol = [float(bids[n].volume_mw.sum()) for n in names]
    mv = mv_dso(region.mv_net, names, buses, vol, limits=MV_LIMITS, salt="mv")
    x = 0.4 * np.asarray(vol)
    draw_p = np.array([region.area(n).p_mw for n in names]) - 0.02
    draw_q = np.array([region.area(n).q_mvar for n in names]) + 0.003
    p_before = mv.lin.pf.load_p_mw.copy()
    mv.refine(x, draw_p_mw=draw_p, draw_q_mvar=draw_q)
    assert mv.lin.pf._fast.reinit_count == 1
    assert np.array_equal(mv.lin.pf.load_p_mw, p_before)
    net = copy.deepcopy(region.mv_net)
    for n, p, q, xi in zip(names, draw_p, draw_q, x):
        i = net.load.index[net.load.name == AREA_LOAD_PREFIX + n][0]
        net.load.at[i, "p_mw"], net.load.at[i, "q_mvar"] = p + xi, q
    fresh = Linearizer(net, mv.bids, salt="mv").point(x, label="r")
    pkg = mv.package
    assert np.abs(pkg.vm_pu[-1] - fresh.vm_pu).max() <= 1e-9
    assert np.abs(pkg.loading_percent[-1] - fresh.loading_percent).max() <= 1e-6
    np.testing.assert_allclose(pkg.vtdf[-1], fresh.vtdf, rtol=1e-7, atol=1e-12)
