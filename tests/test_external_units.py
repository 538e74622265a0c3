"""Flexibility units as mosaik simulators of their own (``[[external_unit]]``, FPUSim ``Port``).

End to end: the example battery (scenarios/examples/ext_battery.py) in its own process
(``cmd`` starter) is the district's only working unit; three winter-workday frames with
requests 0, +0.03 and -0.02 MW. Its bids are cleared, its set-points come back (it logs
what it received), and the grid's AC power flow has its power: the run's slack power equals
a direct pandapower power flow of the frame's profiles plus the battery's activation. A
second, in-process copy is wired wrongly (its port's ``offer_down[MW]`` is the battery's
positive ``offer_up[MW]``): it is flagged every frame and never activated.
Unit level: FPUSim's port clips set-points to the offered range and flags bad input.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from scenarios.config import ConfigError, load_config, parse_config
from scenarios.runner import check_scenario, run_scenario

BUILDING = "B229"   # the school
BAD_BUILDING = "B230"   # the community centre
PRICE_UP, PRICE_DOWN = 80.0, 50.0
CAPACITY_KWH, POWER_KW, SOC0, ETA = 100.0, 50.0, 0.5, 0.95
REQUESTS = [0.0, 0.03, -0.02]   # slots 70, 71, 72 (17:30, 17:45, 18:00)


def _doc(log_csv: str, bad_log_csv: str | None = None, **unit) -> dict:
    return {
        "scenario": {"name": "ext", "seed": 1, "day_types": ["winter_workday"],
                     "slots": "70-72"},
        "request": {"default_mw": 0.0, "window": [
            {"start": "17:45", "end": "18:00", "mw": REQUESTS[1]},
            {"start": "18:00", "end": "18:15", "mw": REQUESTS[2]}]},
        "results": {"plots": False},
        # no in-process unit: the external battery is the fleet
        "fpu": [{"class": "battery", "building_types": ["school"], "penetration": 0.0}],
        "external_unit": [{
            "name": "ext_battery", "building": BUILDING, "model": "Battery",
            "cmd": "%(python)s -m scenarios.examples.ext_battery %(addr)s",
            "sim_params": {"step_size": 900},
            "params": {"capacity_kwh": CAPACITY_KWH, "power_kw": POWER_KW, "soc_init": SOC0,
                       "eta": ETA, "price_up": PRICE_UP, "price_down": PRICE_DOWN,
                       "log_csv": log_csv}} | unit] + ([{
            "name": "bad_battery", "building": BAD_BUILDING, "model": "Battery",
            "python": "scenarios.examples.ext_battery:BatterySim",
            "attrs": {"offer_down[MW]": "offer_up[MW]"},   # a positive "down" offer
            "params": {"log_csv": bad_log_csv}}] if bad_log_csv else []),
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext")
    cfg = parse_config(_doc(str(tmp / "ext_battery.csv"), str(tmp / "bad_battery.csv")))
    run_dir, summary = run_scenario(cfg, out=tmp / "run")
    return cfg, run_dir, pd.read_csv(tmp / "ext_battery.csv"), pd.read_csv(
        tmp / "bad_battery.csv")


def _table(run_dir, name):
    return pd.read_parquet(run_dir / "timeseries" / f"{name}.parquet")


def test_external_bids_are_cleared_and_setpoints_come_back(run):
    cfg, run_dir, log, _ = run
    frames = _table(run_dir, "frames")
    assert frames["status"].tolist() == ["optimal"] * 3
    np.testing.assert_allclose(frames["delivered_mw"], REQUESTS, atol=1e-9)
    bids = _table(run_dir, "bids")
    assert set(bids["unit_id"]) == {"ext_battery"}
    assert not bids["bid_id"].str.contains("ext_battery").any()    # the TSO sees pseudonyms
    up, down = bids[bids["volume_mw"] > 0], bids[bids["volume_mw"] < 0]
    np.testing.assert_allclose(up["volume_mw"], POWER_KW / 1000)    # the full power offered
    np.testing.assert_allclose(down["volume_mw"], -POWER_KW / 1000)
    assert set(up["price_eur_per_mwh"]) == {PRICE_UP}
    assert set(down["price_eur_per_mwh"]) == {PRICE_DOWN}
    cleared = bids.groupby("frame")["activation_mw"].sum()
    np.testing.assert_allclose(cleared.to_numpy(), REQUESTS, atol=1e-9)
    sp = _table(run_dir, "setpoints").set_index("frame")["setpoint_mw"]
    np.testing.assert_allclose(sp.reindex(range(3), fill_value=0.0), REQUESTS, atol=1e-9)
    # the battery's own log: one set-point per frame, at the frame's mosaik time, in a
    # process of its own; its state of charge follows the applied power
    assert log["time_s"].tolist() == [0, 900, 1800]
    np.testing.assert_allclose(log["setpoint_mw"], REQUESTS, atol=1e-9)
    np.testing.assert_allclose(log["applied_mw"], REQUESTS, atol=1e-9)
    assert set(log["pid"]) != {os.getpid()} and log["pid"].nunique() == 1
    soc, expected = SOC0, []
    for p in REQUESTS:
        kwh = p * 1000 * 0.25
        soc -= (kwh / ETA if p > 0 else kwh * ETA) / CAPACITY_KWH
        expected.append(soc)
    np.testing.assert_allclose(log["soc"], expected, rtol=1e-12)
    # the resolved scenario reproduces the external unit
    assert load_config(run_dir / "config.resolved.toml").external_units == cfg.external_units


def test_grid_sees_the_external_units_power(run):
    """AC oracle: pandapower on the frame's building profiles plus the battery's power at
    its building gives the run's slack power; without that power it would differ by about
    the activation."""
    from flexcore.grid.district_grid import building_table, district_net
    from simulators import building_profiles

    cfg, run_dir, _, _ = run
    frames = _table(run_dir, "frames")
    vm_run = _table(run_dir, "voltages")
    elements = pd.read_parquet(run_dir / "elements.parquet")
    bus_of = elements[elements["kind"] == "bus"].set_index("element_id")["pp_index"]
    net, ids, load_idx, sgen_idx = district_net(cfg.grid)
    prof = building_profiles(building_table(cfg.buildings, cfg.grid), seed=cfg.seed,
                             pv_penetration=cfg.pv_penetration).for_frames(cfg.clock().frames)
    order = [list(prof.building_ids).index(b) for b in ids]
    at = np.array([b == BUILDING for b in ids], float)

    def slack(k, p_unit):
        net.load.loc[load_idx, "p_mw"] = prof.load_p_mw[k][order]
        net.load.loc[load_idx, "q_mvar"] = prof.load_q_mvar[k][order]
        net.sgen.loc[sgen_idx, "p_mw"] = prof.pv_p_mw[k][order] + p_unit * at
        pp.runpp(net, tolerance_mva=1e-10, numba=False)
        return float(net.res_ext_grid.p_mw.sum())

    for k, p in enumerate(REQUESTS):
        with_unit, without = slack(k, p), slack(k, 0.0)
        assert frames["p_slack_mw"][k] == pytest.approx(with_unit, abs=1e-8)
        vm = vm_run[vm_run["frame"] == k]
        vm = pd.Series(vm["vm_pu"].to_numpy(), index=bus_of[vm["element_id"]].to_numpy())
        slack(k, p)
        np.testing.assert_allclose(vm[net.bus.index].to_numpy(float),
                                   net.res_bus.vm_pu.to_numpy(), atol=1e-9)
        if p:   # the activation changed the import by about its size (plus losses)
            assert without - with_unit == pytest.approx(p, rel=0.05)


def test_a_unit_offering_a_positive_down_volume_is_flagged_not_applied(run):
    _, run_dir, _, bad_log = run
    flags = pd.read_csv(run_dir / "timeseries" / "unit_flags.csv")
    reason = ("offer_up[MW] = 0.05, offer_down[MW] = 0.05: needs offer_down <= 0 <= "
              "offer_up")   # the example battery's default power, 50 kW
    assert flags.to_dict("records") == [{"frame": k, "unit_id": "bad_battery",
                                         "kind": "flagged", "reason": reason} for k in range(3)]
    frames = _table(run_dir, "frames")
    assert (frames["flagged_units"] == 1).all()
    assert frames["message"].str.contains("bad_battery").all()
    assert "bad_battery" not in set(_table(run_dir, "bids")["unit_id"])
    # its simulator got set-point 0 in every frame and kept its state of charge
    assert bad_log["time_s"].tolist() == [0, 900, 1800]
    assert (bad_log["setpoint_mw"] == 0).all() and (bad_log["soc"] == 0.5).all()
    assert set(bad_log["pid"]) == {os.getpid()}   # python starter: in the runner's process


# ---------------------------------------------------------------- FPUSim Port, unit level
@pytest.fixture(scope="module")
def fleet():
    """FPUSim with house batteries and a port at the school (no other unit there); each
    test steps it at a frame of its own (``next(times)``): a port's input is per frame."""
    import itertools

    from flexcore.district.clock import FrameClock
    from simulators.fpu_sim import FPUSim

    clock = FrameClock.for_day_types(["winter_workday"], tuple(range(40, 70)))
    sim = FPUSim()
    sim.init("FPUSim-0")
    sim.create(1, "Fleet", grid="bergwald", buildings="bergwald", seed=0, pv_penetration=0.6,
               clock=clock.to_dict(),
               fpu=[{"class": "battery", "building_types": ["single_house"],
                     "penetration": 0.3}])
    [port] = sim.create(1, "Port", unit_id="ext", building=BUILDING)
    pseudo = {f"{u['unit_id']}:{u['direction']}": b for b, u in sim.unit_map().items()}
    assert sum(u.building_id == BUILDING for u in sim.units) == 0 and sim.units
    times = (clock.time_of(k) for k in itertools.count())
    return sim, port["eid"], pseudo, times


def _values(**values):
    return {a: {"Unit-0.u": x} for a, x in values.items()}


GOOD = {"P[MW]": -0.001, "offer_up[MW]": 0.004, "offer_down[MW]": -0.002,
        "price[EUR/MWh]": 70.0}


def test_port_offers_clips_and_adds_its_power_to_the_building(fleet):
    sim, eid, pseudo, times = fleet
    t = next(times)
    assert {"bid_id": pseudo["ext:up"], "building_id": BUILDING} in sim.catalog()
    sim.step(t, {eid: _values(**GOOD)}, None)
    out = sim.get_data({"Fleet": ["offers", "P_base[MW]", "dP_base[MW]", "flagged"],
                        eid: ["setpoint[MW]"]})
    offers = {o["bid_id"]: o for o in out["Fleet"]["offers"]}
    assert offers[pseudo["ext:up"]]["volume_mw"] == 0.004
    assert offers[pseudo["ext:down"]]["volume_mw"] == -0.002
    assert offers[pseudo["ext:down"]]["price_eur_per_mwh"] == 70.0   # no down price: one price
    assert out["Fleet"]["P_base[MW]"]["ext"] == -0.001 and not out["Fleet"]["flagged"]
    assert out[eid] == {}   # no set-point before the dispatch
    assert out["Fleet"]["dP_base[MW]"][BUILDING] == -0.001
    assert len(out["Fleet"]["offers"]) > 2             # the in-process units' offers too
    # a set-point beyond the offer: clipped to it, reported, sent back, added to dP
    sim.step(t, {"Fleet": {"setpoint[MW]": {"TSO": {pseudo["ext:up"]: 0.006}}}}, None)
    res = sim.get_data({"Fleet": ["P[MW]", "dP[MW]", "clipped"], eid: ["setpoint[MW]"]})
    assert res[eid] == {"setpoint[MW]": 0.004}
    assert res["Fleet"]["P[MW]"]["ext"] == pytest.approx(0.003, abs=1e-15)
    assert res["Fleet"]["clipped"]["ext"].startswith("above the upward limit")
    assert res["Fleet"]["dP[MW]"][BUILDING] == pytest.approx(0.003, abs=1e-15)


@pytest.mark.parametrize("inputs, reason", [
    (GOOD | {"offer_down[MW]": 0.01}, "offer_up[MW] = 0.004, offer_down[MW] = 0.01: needs "
                                      "offer_down <= 0 <= offer_up"),
    (GOOD | {"offer_up[MW]": -0.001}, "offer_up[MW] = -0.001, offer_down[MW] = -0.002: needs "
                                      "offer_down <= 0 <= offer_up"),
    (GOOD | {"price[EUR/MWh]": math.nan}, "price[EUR/MWh] is nan, not a finite number"),
    ({k: v for k, v in GOOD.items() if k != "P[MW]"}, "no P[MW] received for the frame"),
    ({k: v for k, v in GOOD.items() if k != "price[EUR/MWh]"},
     "offers without price[EUR/MWh]"),
    (GOOD | {"P[MW]": "1 MW"}, "P[MW] is '1 MW', not a number"),
])
def test_bad_port_input_is_flagged_not_applied(fleet, inputs, reason):
    sim, eid, pseudo, times = fleet
    t = next(times)
    sim.step(t, {eid: _values(**inputs)}, None)
    out = sim.get_data({"Fleet": ["offers", "flagged", "dP_base[MW]"]})["Fleet"]
    assert out["flagged"] == {"ext": reason}
    assert not {o["bid_id"] for o in out["offers"]} & {pseudo["ext:up"], pseudo["ext:down"]}
    # a set-point for it anyway: not applied, 0 sent back, the building at P[MW] (or 0)
    sim.step(t, {"Fleet": {"setpoint[MW]": {"TSO": {pseudo["ext:down"]: -0.002}}}}, None)
    res = sim.get_data({"Fleet": ["P[MW]", "dP[MW]", "clipped", "flagged"],
                        eid: ["setpoint[MW]"]})
    p = inputs.get("P[MW]")
    p = p if isinstance(p, float) else 0.0
    assert res[eid] == {"setpoint[MW]": 0.0} and res["Fleet"]["flagged"] == {"ext": reason}
    assert res["Fleet"]["P[MW]"]["ext"] == p and "ext" not in res["Fleet"]["clipped"]
    assert res["Fleet"]["dP[MW]"][BUILDING] == p


def test_two_sources_on_one_port_attribute_are_flagged(fleet):
    sim, eid, _, times = fleet
    bad = _values(**GOOD)
    bad["P[MW]"]["Unit-1.u"] = 0.0
    sim.step(next(times), {eid: bad}, None)
    assert sim.get_data({"Fleet": ["flagged"]})["Fleet"]["flagged"] == {
        "ext": "P[MW]: 2 sources connected, need one"}


def test_port_errors(fleet):
    sim = fleet[0]
    with pytest.raises(ValueError, match="'B999' is not a building"):
        sim.create(1, "Port", unit_id="x", building="B999")
    with pytest.raises(ValueError, match="'ext': a unit with this id exists"):
        sim.create(1, "Port", unit_id="ext", building=BUILDING)


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("change, message", [
    ({"building": None}, r"\[external_unit #1\] missing key 'building'"),
    ({"python": "scenarios.examples.ext_battery:BatterySim"},
     r"\[external_unit #1\] needs exactly one of 'python'"),
    ({"cmd": "python -m x"}, r"\[external_unit #1\] cmd: must contain %\(addr\)s"),
    ({"name": "a b"}, r"\[external_unit #1\] name: letters, digits"),
    ({"attrs": {"P": "p"}}, r"\[external_unit #1\] attrs: unknown port attribute\(s\) \['P'\]"),
    ({"params": 3}, r"\[external_unit #1\] params: expected dict"),
    ({"colour": "red"}, r"\[external_unit #1\] unknown key\(s\) \['colour'\]"),
])
def test_config_errors_name_the_key(change, message):
    doc = _doc("x.csv")
    entry = doc["external_unit"][0]
    for k, v in change.items():
        if v is None:
            del entry[k]
        else:
            entry[k] = v
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_config_rejects_a_name_used_twice():
    doc = _doc("x.csv")
    doc["external_unit"].append(dict(doc["external_unit"][0]))
    with pytest.raises(ConfigError, match=r"\[external_unit #2\] name: 'ext_battery' is used"):
        parse_config(doc)


def test_the_shipped_example_scenario_checks():
    cfg = load_config("scenarios/external_unit.toml")
    assert [e["name"] for e in cfg.external_units] == ["ext_battery"]
    assert check_scenario(cfg).startswith("ok: scenarios/external_unit.toml")


def test_unknown_building_or_module_is_one_config_error(tmp_path):
    doc = _doc(str(tmp_path / "x.csv"))
    doc["external_unit"][0] |= {"building": "B999"}
    for check in (check_scenario, lambda cfg: run_scenario(cfg, out=tmp_path / "a")):
        with pytest.raises(ConfigError, match=r"^\[external_unit #1\] building: 'B999' is "
                                              "not a building of the district$"):
            check(parse_config(doc))   # flexcosim run --check, and a run
    doc = _doc(str(tmp_path / "x.csv"))
    del doc["external_unit"][0]["cmd"]
    doc["external_unit"][0]["python"] = "scenarios.examples.no_such_module:Sim"
    with pytest.raises(ConfigError, match=r"^\[external_unit #1\] python: .*no_such_module"):
        run_scenario(parse_config(doc), out=tmp_path / "b")
