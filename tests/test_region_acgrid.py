"""The region grid of the co-simulation on the fast power flow
(:class:`flexcore.region.acgrid.FastRegionGrid`, ``RegionGridSim`` engine "fast") against
``pandapower.runpp`` (engine "pandapower", :class:`flexcore.region.study.RegionGrid`):
every meter's voltages, loadings, slack voltage and angle and transformer draws, and the
interface flow, on the hand-built region, at the base case, after a set-point, and after a
new frame's injections (loads and a storage unit, whose change rebuilds the engine)."""
from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from flexcore.region.dsos import FrameInjections, write_area
from flexcore.region.split import split_region
from simulators.region_grid import RegionGridSim
from tests.region_grid import small_region

VM_TOL_PU = 1e-9
LOADING_TOL_PERCENT = 1e-6
#: powers (MW, MVAr): pandapower's own convergence tolerance (``tolerance_mva`` 1e-8)
P_TOL_MW = 1e-8


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    net = small_region()
    lv_bus = int(net.bus.index[net.bus.name == "lv1-3"][0])
    pp.create_storage(net, lv_bus, p_mw=0.0, max_e_mwh=0.1)
    region = split_region(net, source="small")
    folder = tmp_path_factory.mktemp("acgrid")
    region_file = write_area(region.net, folder / "region.json")
    buses = {name: int(region.net.bus.index[region.net.bus.name == name][0])
             for name in ("lv0-4", "lv1-2", "lv2-4", "mv2")}
    units = {f"u{k}": bus for k, bus in enumerate(buses.values())} | {"u9": buses["lv0-4"]}
    load = region.net.load
    f = np.array([1.0, 1.4])[:, None]
    one = np.array([int(region.net.storage.index[0])])
    inj = FrameInjections(load.index.to_numpy(), load.bus.to_numpy(),
                          f * load.p_mw.to_numpy()[None], f * load.q_mvar.to_numpy()[None],
                          np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((2, 0)),
                          one, np.array([lv_bus]), np.array([[0.0], [0.03]]))
    inj_file = inj.save(folder / "injections.npz")
    specs = [{"name": a.name, "kind": "lv", "mv_bus": a.mv_bus,
              "buses": a.net.bus.index.tolist()} for a in region.areas]
    specs.append({"name": "mv", "kind": "mv", "buses": region.mv_net.bus.index.tolist(),
                  "trafos": [a.trafo for a in region.areas]})
    return {"region_file": str(region_file), "units": units, "injections_file": str(inj_file),
            "specs": specs}


def _run(case, engine: str) -> list[dict]:
    """Per step: the Region's ``ac`` record (rounds only) and every meter's message."""
    sim = RegionGridSim()
    sim.init("RegionGrid-0", region_file=case["region_file"], units=case["units"],
             injections_file=case["injections_file"], step_s=900, engine=engine)
    sim.create(1, "Region")
    meters = [m["eid"] for m in sim.create(len(case["specs"]), "Meter", areas=case["specs"])]
    want = {m: ["measured"] for m in meters} | {"Region": ["ac"]}
    out = []
    for t, k, act in ((0, None, None), (0, 0, {"u0": 0.05, "u1": -0.03, "u9": 0.02}),
                      (0, 1, {"u2": 0.08, "u3": 0.2}), (900, None, None),
                      (900, 0, {"u0": 0.1, "u3": -0.1})):
        inputs = {} if act is None else {"Region": {"setpoint[MW]": {
            "TSO-0.TSO": {"round": k, "activation_mw": act}}}}
        sim.step(t, inputs, 10**9)
        out.append(sim.get_data(want))
    return out


def test_fast_region_grid_equals_pandapower(case):
    fast, ref = _run(case, "fast"), _run(case, "pandapower")
    moved_slack = []
    for step_fast, step_ref in zip(fast, ref):
        assert step_fast.keys() == step_ref.keys()
        for eid, data in step_ref.items():
            if eid == "Region":
                if "ac" not in data:
                    assert "ac" not in step_fast[eid]
                    continue
                a, b = step_fast[eid]["ac"], data["ac"]
                assert a["converged"] and b["converged"]
                assert a["ext_grid_p_mw"] == pytest.approx(b["ext_grid_p_mw"], abs=P_TOL_MW)
                assert a["delivered_at_interface_mw"] == pytest.approx(
                    b["delivered_at_interface_mw"], abs=P_TOL_MW)
                assert a["activation_mw"] == b["activation_mw"]
                assert a["violations"] == b["violations"] and a["areas"] == b["areas"]
                continue
            m, r = step_fast[eid]["measured"], data["measured"]
            assert m["converged"] and r["converged"]
            assert m["buses"] == r["buses"] and m["branches"] == r["branches"]
            assert len(r["buses"]) > 1 and len(r["branches"]) > 1
            np.testing.assert_allclose(m["vm_pu"], r["vm_pu"], rtol=0, atol=VM_TOL_PU)
            np.testing.assert_allclose(m["loading_percent"], r["loading_percent"], rtol=0,
                                       atol=LOADING_TOL_PERCENT)
            if "slack_vm_pu" in r:
                assert m["slack_vm_pu"] == pytest.approx(r["slack_vm_pu"], abs=VM_TOL_PU)
                assert m["slack_va_degree"] == pytest.approx(r["slack_va_degree"], abs=1e-7)
                moved_slack.append(r["slack_va_degree"])
            else:
                np.testing.assert_allclose(m["draw_p_mw"], r["draw_p_mw"], rtol=0,
                                           atol=P_TOL_MW)
                np.testing.assert_allclose(m["draw_q_mvar"], r["draw_q_mvar"], rtol=0,
                                           atol=P_TOL_MW)
    # the comparison is not vacuous: set-points and the new frame move the state
    assert len(set(np.round(moved_slack, 9))) > 3
    flows = [s["Region"]["ac"]["ext_grid_p_mw"] for s in ref if "ac" in s["Region"]]
    assert len(set(np.round(flows, 6))) == len(flows)
    draws = [s["mv"]["measured"]["draw_p_mw"] for s in ref]
    assert not np.allclose(draws[0], draws[3])   # frame 1: loads x 1.4 and the storage


def test_region_grid_refuses_an_unknown_engine(case):
    with pytest.raises(ValueError, match="engine must be one of"):
        RegionGridSim().init("RegionGrid-0", region_file=case["region_file"],
                             units=case["units"], engine="fastest")
