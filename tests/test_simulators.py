"""The simulators' META and a GridSim step against a direct pandapower run."""
from __future__ import annotations

import re

import numpy as np
import pandapower as pp

from agents import dso_agent, tso_agent, validator
from flexcore.grid.district_grid import district_net
from simulators import building_sim, fpu_sim, grid_sim

UNIT = re.compile(r"\[(MW|MVAr|pu|%|s)\]$")
PHYSICAL = ("P_", "Q_", "Vm", "loading", "dP", "setpoint", "P[")


def test_meta_attributes_carry_units():
    for mod in (building_sim, fpu_sim, grid_sim, dso_agent, tso_agent, validator):
        for model in mod.META["models"].values():
            for attr in model["attrs"]:
                if attr.startswith(PHYSICAL):
                    assert UNIT.search(attr), f"{mod.__name__}: {attr} lacks a unit"


def test_gridsim_step_equals_direct_pandapower():
    sim = grid_sim.GridSim()
    sim.init("GridSim-0")
    sim.create(1, "Grid", grid="bergwald")
    net, ids, load_idx, sgen_idx = district_net("bergwald")
    rng = np.random.default_rng(0)
    lp = rng.uniform(0, 0.004, len(ids))
    pv = rng.uniform(0, 0.003, len(ids))
    dp = rng.uniform(-0.002, 0.002, len(ids))
    src = "X.District"
    inputs = {"Grid": {"P_load[MW]": {src: dict(zip(ids, lp))},
                       "Q_load[MVAr]": {src: dict(zip(ids, 0.25 * lp))},
                       "P_pv[MW]": {src: dict(zip(ids, pv))},
                       "dP[MW]": {"Y.Fleet": dict(zip(ids, dp))}}}
    sim.step(0, inputs, 0)
    out = sim.get_data({"Grid": ["Vm[pu]", "converged"]})["Grid"]
    net.load.loc[load_idx, "p_mw"] = lp
    net.load.loc[load_idx, "q_mvar"] = 0.25 * lp
    net.sgen.loc[sgen_idx, "p_mw"] = pv + dp
    pp.runpp(net)
    assert out["converged"]
    got = np.array([out["Vm[pu]"][str(b)] for b in net.bus.index])
    np.testing.assert_allclose(got, net.res_bus.vm_pu.to_numpy(), atol=1e-10)
