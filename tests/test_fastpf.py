"""flexcore.grid.fastpf against pandapower.runpp and sensitivity.compute (the references).

Grids: Bergwald (radial, 3 transformers, parallel lines), SimBench 1-LV-rural3--0-sw
(switches) and the same grid meshed by an extra line between two feeders, with a PV
generator. Per grid, several seeded random injection sets, one with reverse flow through the
transformer. Reference power flows run with ``tolerance_mva=1e-11`` so that the comparison
measures the fast path, not pandapower's stopping point.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pandapower as pp
import pytest

from flexcore.grid import grids, sensitivity
from flexcore.grid.fastpf import FastPowerFlow, klu_available

VM_ATOL_PU = 1e-9
LOADING_ATOL_PERCENT = 1e-6
SENS_RTOL = 1e-9  # relative to the largest entry of each matrix
REF_TOL_MVA = 1e-11
ENGINES = ["scipy", pytest.param("klu", marks=pytest.mark.skipif(
    not klu_available(), reason="lightsim2grid not installed"))]


@functools.cache
def _grid(name: str):
    if name == "meshed":
        net = grids.load_grid("simbench:1-LV-rural3--0-sw")
        buses = net.load.bus.to_numpy()
        loop = pp.create_line_from_parameters(net, int(buses[0]), int(buses[-1]),
                                              length_km=0.3, r_ohm_per_km=0.206,
                                              x_ohm_per_km=0.08, c_nf_per_km=260.0,
                                              max_i_ka=0.27, name="loop")
        pp.create_switch(net, int(buses[0]), loop, et="l", closed=True, name="loop switch")
        pp.create_gen(net, int(buses[len(buses) // 2]), p_mw=0.01, vm_pu=1.01, name="pv gen")
        return net
    return grids.load_grid(name)


def grid(name: str):
    return copy.deepcopy(_grid(name))


GRIDS = ["bergwald", "simbench:1-LV-rural3--0-sw", "meshed"]


def injections(net, seed: int, *, reverse: bool = False):
    rng = np.random.default_rng(seed)
    base = np.maximum(net.load.p_mw.to_numpy(float), 1e-3)
    load_p = base * rng.uniform(0.0, 2.0, len(base))
    load_q = load_p * rng.uniform(0.0, 0.4, len(base))
    mean = 3.0 if reverse else 0.3  # reverse: PV feed-in ~3x the load
    sgen_p = load_p.sum() * mean / len(net.sgen) * rng.uniform(0.5, 1.5, len(net.sgen))
    return load_p, load_q, sgen_p


def reference(net, load_p, load_q, sgen_p):
    """pandapower on a copy: (vm, signed loading, keys, net)."""
    ref = copy.deepcopy(net)
    ref.load["p_mw"], ref.load["q_mvar"] = load_p, load_q
    ref.sgen["p_mw"], ref.sgen["q_mvar"] = sgen_p, 0.0
    pp.runpp(ref, tolerance_mva=REF_TOL_MVA)
    vm, lp, keys = sensitivity.signed_results(ref)
    return vm, lp, keys, ref


def assert_matches(res, vm, lp, ref_net, keys=None):
    """Signed loadings compared where active power flows (> 1 W); the sign of a branch that
    carries only charging current (an open line end) is rounding noise in both."""
    assert res.converged
    np.testing.assert_allclose(res.vm_pu, vm, rtol=0, atol=VM_ATOL_PU)
    np.testing.assert_allclose(np.abs(res.loading_percent), np.abs(lp), rtol=0,
                               atol=LOADING_ATOL_PERCENT)
    keys = keys or sensitivity.signed_results(ref_net)[2]
    p_from = np.array([ref_net.res_line.at[i, "p_from_mw"] if e == "line"
                       else ref_net.res_trafo.at[i, "p_hv_mw"] for e, i in keys])
    flows = np.abs(p_from) > 1e-6
    np.testing.assert_allclose(res.loading_percent[flows], lp[flows], rtol=0,
                               atol=LOADING_ATOL_PERCENT)
    assert res.p_slack_mw == pytest.approx(ref_net.res_ext_grid.p_mw.sum(), abs=1e-8)
    assert res.p_loss_mw == pytest.approx(
        ref_net.res_line.pl_mw.sum() + ref_net.res_trafo.pl_mw.sum(), abs=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", GRIDS)
def test_power_flow_and_sensitivities_match_pandapower(name, engine):
    net = grid(name)
    fast = FastPowerFlow(net, engine=engine)
    assert fast.engine == engine
    for k, (seed, reverse) in enumerate([(1, False), (2, False), (3, True)]):
        load_p, load_q, sgen_p = injections(net, seed, reverse=reverse)
        res = fast.run(load_p, load_q, sgen_p)
        vm, lp, keys, ref = reference(net, load_p, load_q, sgen_p)
        assert fast.branch_keys == keys
        assert_matches(res, vm, lp, ref, keys)
        if reverse:
            assert ref.res_trafo.p_hv_mw.sum() < 0 and res.p_slack_mw < 0
            assert (res.loading_percent[[e == "trafo" for e, _ in keys]] < 0).all()
        if k == 0 or reverse:  # sensitivities at a forward and at a reverse-flow point
            buses = net.load.bus.to_numpy()[::3]
            got = fast.sensitivities(buses)
            want = sensitivity.compute(ref, buses)
            assert np.array_equal(got.bus_index, want.bus_index)
            assert got.branches == want.branches
            for a, b in ((got.vtdf, want.vtdf), (got.ltdf, want.ltdf)):
                np.testing.assert_allclose(a, b, rtol=0, atol=SENS_RTOL * np.abs(b).max())
            np.testing.assert_allclose(got.vm_pu, want.vm_pu, rtol=0, atol=VM_ATOL_PU)
            np.testing.assert_allclose(got.loading_percent, want.loading_percent, rtol=0,
                                       atol=LOADING_ATOL_PERCENT)
    assert fast.reinit_count == 1  # no topology change: one pandapower power flow in all


def test_subset_order_and_out_of_service_elements():
    """Tracked elements in any order; out-of-service loads/sgens contribute nothing."""
    net = grid("simbench:1-LV-rural3--0-sw")
    net.load.loc[net.load.index[5], "in_service"] = False
    net.sgen.loc[net.sgen.index[2], "in_service"] = False
    load_idx = net.load.index.to_numpy()[::-1]
    sgen_idx = net.sgen.index.to_numpy()[::-1]
    fast = FastPowerFlow(net, load_index=load_idx, sgen_index=sgen_idx)
    load_p, load_q, sgen_p = injections(net, 7)
    res = fast.run(load_p[::-1], load_q[::-1], sgen_p[::-1])
    vm, lp, _, ref = reference(net, load_p, load_q, sgen_p)
    assert_matches(res, vm, lp, ref)


def test_topology_change_reinitialises():
    net = grid("meshed")
    fast = FastPowerFlow(net)
    load_p, load_q, sgen_p = injections(net, 11)
    fast.run(load_p, load_q, sgen_p)
    loop = int(fast.net.line.index[fast.net.line.name == "loop"][0])
    fast.net.line.at[loop, "in_service"] = False  # open the loop
    res = fast.run(load_p, load_q, sgen_p)
    assert fast.reinit_count == 2
    changed = copy.deepcopy(net)
    changed.line.at[loop, "in_service"] = False
    vm, lp, keys, ref = reference(changed, load_p, load_q, sgen_p)
    assert fast.branch_keys == keys and ("line", loop) not in keys
    assert_matches(res, vm, lp, ref)
    res2 = fast.run(load_p, load_q, sgen_p)  # same topology: no further re-initialisation
    assert fast.reinit_count == 2 and res2.converged


def test_open_switch_is_a_topology_change():
    """Opening the loop's line switch (no bus loses supply: ppinternals.extract_state does
    not map branches when an open switch leaves buses unsupplied, see the report)."""
    net = grid("meshed")
    fast = FastPowerFlow(net)
    load_p, load_q, sgen_p = injections(net, 12)
    sw = int(fast.net.switch.index[fast.net.switch.name == "loop switch"][0])
    fast.net.switch.at[sw, "closed"] = False
    res = fast.run(load_p, load_q, sgen_p)
    assert fast.reinit_count == 2
    changed = copy.deepcopy(net)
    changed.switch.at[sw, "closed"] = False
    vm, lp, _, ref = reference(changed, load_p, load_q, sgen_p)
    assert len(res.vm_pu) == len(vm)
    assert_matches(res, vm, lp, ref)


@pytest.mark.parametrize("engine", ENGINES)
def test_non_convergence_is_reported_not_raised(engine):
    net = grid("simbench:1-LV-rural3--0-sw")
    fast = FastPowerFlow(net, engine=engine)
    load_p, load_q, sgen_p = injections(net, 13)
    bad = fast.run(load_p * 200.0, load_q * 200.0, sgen_p)  # far beyond the loadability limit
    assert not bad.converged and np.isnan(bad.vm_pu).all() and np.isnan(bad.loading_percent).all()
    with pytest.raises(RuntimeError):
        fast.sensitivities(net.load.bus.to_numpy()[:2])
    good = fast.run(load_p, load_q, sgen_p)  # recovers from the initial voltages
    vm, lp, _, ref = reference(net, load_p, load_q, sgen_p)
    assert_matches(good, vm, lp, ref)


def test_engines_agree_and_warm_start_saves_iterations():
    if not klu_available():
        pytest.skip("lightsim2grid not installed")
    net = grid("bergwald")
    a, b = FastPowerFlow(net, engine="scipy"), FastPowerFlow(net, engine="klu")
    for seed in (21, 22):
        inj = injections(net, seed)
        ra, rb = a.run(*inj), b.run(*inj)
        np.testing.assert_allclose(ra.vm_pu, rb.vm_pu, rtol=0, atol=1e-11)
        np.testing.assert_allclose(ra.loading_percent, rb.loading_percent, rtol=0, atol=1e-8)
    load_p, load_q, sgen_p = injections(net, 22)
    assert a.run(load_p * 1.001, load_q, sgen_p).iterations <= 2


def test_unknown_injection_bus_is_rejected():
    net = grid("simbench:1-LV-rural3--0-sw")
    fast = FastPowerFlow(net)
    with pytest.raises(ValueError, match="not an in-service bus"):
        fast.sensitivities([10_000_000])


def test_shared_net_sees_the_callers_topology_change():
    net = grid("meshed")
    fast = FastPowerFlow(net, copy_net=False)
    assert fast.net is net
    loop = int(net.line.index[net.line.name == "loop"][0])
    net.line.at[loop, "in_service"] = False
    res = fast.run(*injections(net, 31))
    assert fast.reinit_count == 2 and res.converged and ("line", loop) not in fast.branch_keys


# --------------------------------------------------------------------------- engines
# flexcore.grid.powerflow.ArrayPowerFlow and the DSO's Linearizer on both engines: the fast
# path (default) against pandapower (the reference), on Bergwald, a SimBench LV grid and a
# meshed grid (tests/grid_helpers.py).
from flexcore.dso.linearizer import Linearizer  # noqa: E402
from flexcore.exchange.bids import BidTable  # noqa: E402
from flexcore.grid.powerflow import ArrayPowerFlow  # noqa: E402
from tests.grid_helpers import meshed  # noqa: E402

ENGINE_GRIDS = ["bergwald", "simbench:1-LV-semiurb4--0-sw", "meshed-semiurb4"]


@functools.cache
def _engine_grid(name: str):
    if name == "meshed-semiurb4":
        return meshed(grids.load_grid("simbench:1-LV-semiurb4--0-sw"))
    return grids.load_grid(name)


def _bids(net, seed: int) -> BidTable:
    """One bid per load bus (every third with a second one), volumes of +-30 kW."""
    rng = np.random.default_rng(seed)
    bus = net.load.bus.to_numpy(np.int64)
    bus = np.r_[bus, bus[::3]]
    n = len(bus)
    return BidTable(ids=tuple(f"b{k}" for k in range(n)),
                    volume_mw=rng.choice([-1.0, 1.0], n) * rng.uniform(0.005, 0.03, n),
                    price_eur_per_mwh=rng.uniform(20.0, 200.0, n), bus=bus)


@pytest.mark.parametrize("name", ENGINE_GRIDS)
def test_array_power_flow_engines_match_runpp(name):
    """ArrayPowerFlow(fast) vs pandapower.runpp on the same powers (1e-9 p.u., 1e-6 %)."""
    net = copy.deepcopy(_engine_grid(name))
    fast = ArrayPowerFlow(copy.deepcopy(net), engine="fast")
    slow = ArrayPowerFlow(copy.deepcopy(net), engine="pandapower")
    assert fast.engine == "fast" and not fast.fallback_reason and slow.engine == "pandapower"
    for seed, reverse in ((41, False), (42, True)):
        load_p, load_q, sgen_p = injections(net, seed, reverse=reverse)
        for pf in (fast, slow):
            pf.set(load_p_mw=load_p, load_q_mvar=load_q, sgen_p_mw=sgen_p)
            assert pf.run()
        vm, lp, keys, ref = reference(net, load_p, load_q, sgen_p)
        assert fast.branch_keys() == slow.branch_keys() == keys
        assert np.array_equal(fast.bus_index(), slow.bus_index())
        for pf in (fast, slow):
            got_vm, got_lp = pf.results()
            np.testing.assert_allclose(got_vm, vm, rtol=0, atol=VM_ATOL_PU)
            np.testing.assert_allclose(np.abs(got_lp), np.abs(lp), rtol=0,
                                       atol=LOADING_ATOL_PERCENT)
            p_slack, p_loss = pf.totals()
            assert p_slack == pytest.approx(ref.res_ext_grid.p_mw.sum(), abs=1e-8)
        # the fast engine's net is written and solved by pandapower only when asked for
        synced = fast.sync_net()
        np.testing.assert_allclose(synced.res_bus.vm_pu.to_numpy(), ref.res_bus.vm_pu.to_numpy(),
                                   atol=VM_ATOL_PU)


@pytest.mark.parametrize("name", ENGINE_GRIDS)
def test_linearizer_engines_agree_and_match_finite_differences(name):
    """Operating points (values, VTDF, LTDF) and the AC check of the fast path equal the
    pandapower path's; one column against central finite differences of runpp."""
    net = _engine_grid(name)
    bids = _bids(net, 5)
    lins = {e: Linearizer(net, bids, salt="engines", engine=e) for e in ("fast", "pandapower")}
    assert lins["fast"].engine == "fast" and lins["pandapower"].engine == "pandapower"
    assert lins["fast"].keymap.vm_pu == lins["pandapower"].keymap.vm_pu
    for a in (0.0, 1.0):
        pts = [lin.point(a * bids.volume_mw, label="p") for lin in lins.values()]
        f, p = pts
        np.testing.assert_allclose(f.vm_pu, p.vm_pu, rtol=0, atol=VM_ATOL_PU)
        np.testing.assert_allclose(f.loading_percent, p.loading_percent, rtol=0,
                                   atol=LOADING_ATOL_PERCENT)
        for x, y in ((f.vtdf, p.vtdf), (f.ltdf, p.ltdf)):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-7 * np.abs(y).max())
    x = 0.7 * bids.volume_mw
    reps = [lin.validate(x, predicted_vm_pu={}, predicted_loading_percent={})
            for lin in lins.values()]
    assert reps[0].converged and reps[1].converged
    assert reps[0].vm_min_pu == pytest.approx(reps[1].vm_min_pu, abs=VM_ATOL_PU)
    assert reps[0].max_loading_percent == pytest.approx(reps[1].max_loading_percent,
                                                        abs=LOADING_ATOL_PERCENT)
    assert [v.key for v in reps[0].violations] == [v.key for v in reps[1].violations]
    # finite differences of pandapower at the zero point, for the first bid's bus
    lin = lins["fast"]
    pt = lin.point(np.zeros(len(bids)), label="zero")
    work = copy.deepcopy(lin.net)  # the fast engine's state, written and solved by runpp
    fd_v, fd_l = sensitivity.finite_differences(work, bids.bus[:1], h_mw=1e-5)
    np.testing.assert_allclose(pt.vtdf[:, 0], fd_v[lin.row_positions.vm, 0], rtol=0,
                               atol=2e-6)
    np.testing.assert_allclose(pt.ltdf[:, 0], fd_l[lin.row_positions.loading, 0], rtol=0,
                               atol=0.05)


def test_unsupported_grid_falls_back_to_pandapower_with_a_reason():
    """A voltage-dependent load is not supported by the fast path: pandapower is used, the
    reason kept, and the results are pandapower's."""
    net = copy.deepcopy(_engine_grid("simbench:1-LV-semiurb4--0-sw"))
    net.load.loc[net.load.index[0], "const_z_p_percent"] = 50.0
    with pytest.warns(UserWarning, match="fast power flow not used"):
        pf = ArrayPowerFlow(copy.deepcopy(net), engine="fast")
    assert pf.engine == "pandapower" and "voltage-dependent" in pf.fallback_reason
    assert pf.run()
    ref = copy.deepcopy(net)
    pp.runpp(ref)
    np.testing.assert_allclose(pf.results()[0], ref.res_bus.vm_pu.to_numpy(), atol=1e-12)


def test_cosimulation_same_results_on_both_engines(tmp_path):
    """A one-frame co-simulation (the 1.8 MW evening request, with a refinement round) gives
    the same costs (1e-9 relative), delivered power, statuses and errors with
    ``[grid] engine = "fast"`` and ``"pandapower"`` (the whole default run: bench_cosim)."""
    import dataclasses

    import pandas as pd

    from bench.bench_cosim import compare
    from scenarios.config import load_config
    from scenarios.runner import apply_overrides, run_scenario

    cfg = dataclasses.replace(apply_overrides(load_config("scenarios/bergwald.toml"),
                                              day_types="winter_workday", frames="72"),
                              plots=False)
    assert cfg.grid_engine == "fast"  # the default
    tables = {}
    for engine in ("fast", "pandapower"):
        run_dir, _ = run_scenario(dataclasses.replace(cfg, grid_engine=engine),
                                  out=tmp_path / engine)
        tables[engine] = pd.read_parquet(run_dir / "timeseries" / "frames.parquet")
        assert f'engine = "{engine}"' in (run_dir / "config.resolved.toml").read_text()
    fast, ref = tables["fast"], tables["pandapower"]
    assert (ref["status"] == "optimal").all() and ref["rounds"].max() >= 1
    assert ref["cost_eur_per_h"].min() > 0 and ref["delivered_mw"].iloc[0] == pytest.approx(1.8)
    res = compare(fast, ref)
    assert res["same_results"], res
    assert res["cost_max_rel_diff"] <= 1e-9


def test_rebuild_reads_what_the_caller_changed_in_the_net():
    """Changes made in ``net`` itself (a load's power, opening a line) take effect after
    ``rebuild()``, on both engines, as pandapower computes them."""
    net = copy.deepcopy(_engine_grid("meshed-semiurb4"))
    loop = int(net.line.index[net.line.name == "loop"][0])
    load = int(net.load.index[3])
    changed = copy.deepcopy(net)
    changed.line.at[loop, "in_service"] = False
    changed.load.at[load, "p_mw"] = 0.02
    pp.runpp(changed, tolerance_mva=REF_TOL_MVA)
    vm, lp, keys = sensitivity.signed_results(changed)
    for engine in ("fast", "pandapower"):
        pf = ArrayPowerFlow(copy.deepcopy(net), engine=engine)
        assert pf.run()
        work = pf.sync_net()
        work.line.at[loop, "in_service"] = False
        work.load.at[load, "p_mw"] = 0.02
        pf.rebuild()
        assert pf.run() and pf.branch_keys() == keys and ("line", loop) not in keys
        np.testing.assert_allclose(pf.results()[0], vm, rtol=0, atol=VM_ATOL_PU)
        np.testing.assert_allclose(np.abs(pf.results()[1]), np.abs(lp), rtol=0,
                                   atol=LOADING_ATOL_PERCENT)
