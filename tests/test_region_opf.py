"""The region's AC OPF reference (flexcore.region.opf) on the small test region: its
dispatch is AC-feasible in an independent pandapower power flow of the whole region, the
reported gap is the cost difference, the base-case rule widens limits, the reduced region
reproduces the whole region's MV state."""
from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pytest

from flexcore.exchange.limits import Limits
from flexcore.region.opf import (
    check_dispatch,
    merit_order_cost,
    opf_gap,
    reduced_net,
    region_limits,
    region_opf,
)
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import small_region


@pytest.fixture(scope="module")
def binding_case():
    """A request at 60 % of the bids: a line loading binds (clearing above merit)."""
    region = split_region(small_region(n_lv=3, lv_buses=5))
    bids = region_bids(region, seed=1)
    request = 0.6 * float(sum(b.volume_mw.sum() for b in bids.values()))
    rep = run_region(setup_region(region, bids), request)
    opf = region_opf(region, bids, request, interface_mw=rep.delivered_at_interface_mw)
    return region, bids, request, rep, opf


def _independent_pf(region, bids, activation):
    net = copy.deepcopy(region.net)
    for name, b in bids.items():
        pp.create_sgens(net, [int(x) for x in b.bus], p_mw=activation[name], q_mvar=0.0)
    pp.runpp(net)
    return net


def test_opf_dispatch_is_ac_feasible_and_gap_is_the_cost_difference(binding_case):
    region, bids, request, rep, opf = binding_case
    assert rep.status == "optimal" and rep.ac_safe
    assert opf.status == "optimal" and opf.check is not None and opf.check.feasible
    # bid boxes
    for name, b in bids.items():
        x = opf.activation_mw[name]
        assert np.all(x >= -1e-7) and np.all(x <= b.volume_mw + 1e-7)
    # the oracle: pandapower's power flow of the whole region at the OPF's set-points
    net = _independent_pf(region, bids, opf.activation_mw)
    lv = net.bus.vn_kv < 1.0
    vm = net.res_bus.vm_pu
    assert vm[lv].min() >= 0.90 - 1e-5 and vm[lv].max() <= 1.10 + 1e-5
    assert vm[~lv].min() >= 0.965 - 1e-5 and vm[~lv].max() <= 1.055 + 1e-5
    assert net.res_line.loading_percent.max() <= 100 + 1e-3
    assert net.res_trafo.loading_percent.max() <= 100 + 1e-3
    # the exchange at the ext_grid is what the clearing's dispatch delivered there
    base = copy.deepcopy(region.net)
    pp.runpp(base)
    delivered = float(base.res_ext_grid.p_mw.sum() - net.res_ext_grid.p_mw.sum())
    assert delivered == pytest.approx(rep.delivered_at_interface_mw, abs=1e-5)
    # a limit binds: a branch sits at 100 %, the clearing is above the merit order
    assert max(net.res_line.loading_percent.max(), net.res_trafo.loading_percent.max()) > 99.99
    assert opf.check.at_limit > 0
    cost = sum(float(np.abs(opf.activation_mw[n]) @ b.price_eur_per_mwh)
               for n, b in bids.items())
    gap = opf_gap(rep.cost_eur_per_h, opf, bids)
    assert gap.opf_eur_per_h == pytest.approx(cost, rel=1e-12)
    assert gap.gap_eur_per_h == pytest.approx(rep.cost_eur_per_h - cost, abs=1e-9)
    assert gap.gap_percent == pytest.approx(100 * (rep.cost_eur_per_h - cost) / cost)
    assert gap.limits_bind and rep.cost_eur_per_h > 1.1 * merit_order_cost(bids, request)
    # the cleared dispatch is feasible for this OPF, so the OPF is not (much) dearer
    assert -1e-3 < gap.gap_percent < 1.0


def test_merit_order_cost_by_hand():
    from flexcore.exchange.bids import BidTable
    b = {"a": BidTable(ids=("x", "y"), volume_mw=np.array([1.0, 2.0]),
                       price_eur_per_mwh=np.array([30.0, 10.0]), bus=np.array([1, 2]))}
    assert merit_order_cost(b, 2.5) == pytest.approx(2 * 10 + 0.5 * 30)
    assert merit_order_cost(b, 4.0) == np.inf


def test_base_case_violations_widen_the_limits_and_are_not_made_worse():
    """LV band 0.99-1.10: the base case has LV buses below 0.99; the OPF may leave them
    there but not lower, and the check counts them as no violation."""
    lv_lim = Limits(vm_min_pu=0.99, vm_max_pu=1.10)
    region = split_region(small_region(n_lv=2, lv_buses=5), lv_limits=lv_lim)
    net = copy.deepcopy(region.net)
    pp.runpp(net)
    lim = region_limits(region, net)
    low = [b for b in net.bus.index if net.bus.vn_kv[b] < 1 and net.res_bus.vm_pu[b] < 0.99]
    assert low and lim.base_violations >= len(low)
    for b in low:
        assert lim.vm_min_pu[b] == pytest.approx(net.res_bus.vm_pu[b])
    ok = [b for b in net.bus.index if net.bus.vn_kv[b] < 1 and b not in low]
    assert all(lim.vm_min_pu[b] == 0.99 for b in ok)
    # a small request cannot lift every low bus back to 0.99: feasible only because the
    # base-case violations need not be repaired; none of them may get worse
    bids = region_bids(region, seed=3)
    request = 0.02
    opf = region_opf(region, bids, request)
    assert opf.status == "optimal" and opf.check is not None and opf.check.feasible
    after = _independent_pf(region, bids, opf.activation_mw)
    assert min(after.res_bus.vm_pu[b] for b in low) < 0.99
    for b in low:
        assert after.res_bus.vm_pu[b] >= net.res_bus.vm_pu[b] - 1e-5
    assert opf.interface_mw == pytest.approx(request, abs=1e-5)


def test_reduced_region_keeps_the_mv_state():
    """Dropping LV areas for their base-case draw at the MV bus leaves the MV voltages and
    the ext_grid import of the base case unchanged (the MV DSO's view, exact)."""
    region = split_region(small_region(n_lv=3, lv_buses=5))
    full = copy.deepcopy(region.net)
    pp.runpp(full)
    red = reduced_net(region, ["lv1"] if "lv1" in [a.name for a in region.areas] else
                      [region.areas[0].name])
    pp.runpp(red)
    assert len(red.bus) < len(full.bus)
    mv = [b for b in red.bus.index if red.bus.vn_kv[b] >= 1]
    assert np.allclose(red.res_bus.vm_pu[mv], full.res_bus.vm_pu[mv], atol=1e-8)
    assert red.res_ext_grid.p_mw.sum() == pytest.approx(full.res_ext_grid.p_mw.sum(), abs=1e-8)


def test_check_dispatch_flags_an_overload():
    region = split_region(small_region(n_lv=1, lv_buses=5))
    bids = region_bids(region, seed=1, share=(3.0, 3.0))
    full = {n: b.volume_mw for n, b in bids.items()}     # 3x the trafo rating
    chk = check_dispatch(region, bids, full)
    assert chk.converged and not chk.feasible
    assert chk.worst.startswith("line") and chk.max_loading_percent > 300
    assert chk.violations >= 2 and chk.vm_max_pu > 1.10    # LV overvoltage counted too
