"""AC sensitivities against finite differences of real pandapower power flows (issue: DSO side).

Oracle: central differences ``(f(P + h) - f(P - h)) / 2h`` of full AC power flows with a
probe generator at the injection bus, h = 1e-5 MW (10 W: small enough that no branch
reverses its flow, large enough to stay above the solver tolerance).
"""
from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pytest

from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.bids import BidTable
from flexcore.grid import grids, ppinternals, sensitivity

H_MW = 1e-5
#: the power flow converges to 1e-8 MVA; with h = 1e-5 MW the difference quotient carries
#: ~1e-3 relative noise on tiny entries, hence these absolute tolerances
VM_ATOL = 2e-6  # p.u. per MW (entries are up to ~0.3 p.u./MW)
LOADING_ATOL = 0.05  # % per MW (entries are up to ~1,000 %/MW)


def assert_matches_fd(net, buses):
    pp.runpp(net, tolerance_mva=1e-10)
    s = sensitivity.compute(net, buses)
    fd_v, fd_l = sensitivity.finite_differences(net, buses, h_mw=H_MW)
    assert np.abs(s.vtdf - fd_v).max() < VM_ATOL
    assert np.abs(s.ltdf - fd_l).max() < LOADING_ATOL
    assert np.abs(s.vtdf).max() > 1e-3 and np.abs(s.ltdf).max() > 10  # not trivially zero
    return s


@pytest.fixture(scope="module")
def bergwald():
    return grids.load_grid("bergwald")


@pytest.fixture(scope="module")
def rural():
    return grids.load_grid("simbench:1-LV-rural1--0-no_sw")


def test_bergwald_sensitivities_match_finite_differences(bergwald):
    loads = bergwald.load.bus.to_numpy()
    buses = loads[[0, 57, 130, 200, 236]]  # houses, a duplex, a tower, a shop on all feeders
    s = assert_matches_fd(copy.deepcopy(bergwald), buses)
    # the row layout covers every bus, every line and every transformer
    assert len(s.bus_index) == len(bergwald.bus)
    assert sum(e == "trafo" for e, _ in s.branches) == 3


def test_simbench_sensitivities_match_finite_differences(rural):
    assert_matches_fd(copy.deepcopy(rural), rural.load.bus.to_numpy())


def test_reverse_flow_through_the_transformer(rural):
    """PV feed-in exceeds the load: the transformer exports; signs and slopes still match."""
    net = copy.deepcopy(rural)
    net.sgen["p_mw"] = net.sgen.sn_mva * 0.9
    pp.runpp(net)
    assert net.res_trafo.p_hv_mw.iloc[0] < 0  # reverse flow
    s = assert_matches_fd(net, net.load.bus.to_numpy()[:6])
    t = [k for k, (e, _) in enumerate(s.branches) if e == "trafo"][0]
    assert s.loading_percent[t] == pytest.approx(-net.res_trafo.loading_percent.iloc[0])
    assert (s.ltdf[t] < 0).all()  # more injection: more export, more negative loading


def test_signed_loading_follows_active_power_direction(bergwald):
    net = copy.deepcopy(bergwald)
    pp.runpp(net)
    _, lp, keys = sensitivity.signed_results(net)
    lines = [k for k, (e, _) in enumerate(keys) if e == "line"]
    p_from = net.res_line.p_from_mw.to_numpy()
    assert np.array_equal(np.sign(lp[lines]), np.where(p_from >= 0, 1.0, -1.0))
    assert np.allclose(np.abs(lp[lines]), net.res_line.loading_percent, atol=1e-6)


def test_internals_check_fails_loudly_when_lookups_change(bergwald):
    net = copy.deepcopy(bergwald)
    pp.runpp(net)
    ppinternals.extract_state(net)  # consistent
    lookup = net._pd2ppc_lookups["bus"]
    lookup[[5, 6]] = lookup[[6, 5]]
    with pytest.raises(ppinternals.InternalsChanged, match="bus lookup"):
        ppinternals.extract_state(net)
    net = copy.deepcopy(bergwald)
    pp.runpp(net)
    net._pd2ppc_lookups["branch"]["line"] = (1, len(net.line) + 1)
    with pytest.raises(ppinternals.InternalsChanged):
        ppinternals.extract_state(net)


def test_internals_on_a_grid_with_switches_and_out_of_service_line():
    net = grids.load_grid("simbench:1-LV-rural1--0-sw")
    net.line.loc[net.line.index[-1], "in_service"] = False  # a spur: the grid stays connected
    pp.runpp(net)
    state = ppinternals.extract_state(net)  # raises if lookups or branch remap are off
    assert sum(len(b.index) for b in state.branches) == len(net.line) - 1 + len(net.trafo)


def test_injection_at_an_unknown_bus_is_rejected(bergwald):
    net = copy.deepcopy(bergwald)
    pp.runpp(net)
    with pytest.raises(ValueError, match="99999"):
        sensitivity.compute(net, [99999])


def test_operating_points_are_real_power_flows(rural):
    loads = rural.load
    bids = BidTable(ids=tuple(f"b{k}" for k in range(len(loads))),
                    volume_mw=np.full(len(loads), 0.01), price_eur_per_mwh=np.arange(len(loads)),
                    bus=loads.bus.to_numpy())
    lin = Linearizer(rural, bids, salt="test")
    rep = lin.linearize((0.0, 1.0))
    pkg = rep.package
    net = copy.deepcopy(rural)
    for bus in loads.bus:
        pp.create_sgen(net, int(bus), p_mw=0.01)
    pp.runpp(net)
    vm_by_bus = net.res_bus.vm_pu
    km = lin.keymap
    got = np.array([vm_by_bus[km.vm_pu[k]] for k in pkg.vm_rows])
    assert np.allclose(pkg.vm_pu[1], got, atol=1e-9)
    assert np.allclose(pkg.p_flex_mw[1], 0.01) and np.allclose(pkg.p_flex_mw[0], 0.0)


def test_non_converging_point_is_reported_and_left_out(rural):
    # 400 bids of -0.125 MW on one bus (each below the 0.16 MVA transformer, the DSO's
    # per-bid plausibility check; together -50 MW)
    loads, n = rural.load, 400
    bids = BidTable(ids=tuple(f"h{k}" for k in range(n)), volume_mw=np.full(n, -0.125),
                    price_eur_per_mwh=np.ones(n), bus=np.repeat(loads.bus.to_numpy()[:1], n))
    lin = Linearizer(rural, bids, salt="test")
    rep = lin.linearize((0.0, 0.5, 1.0))
    assert rep.points_ok == ("a=0",)
    assert rep.points_failed == ("a=0.5", "a=1")
    assert "did not converge" in rep.as_text()
