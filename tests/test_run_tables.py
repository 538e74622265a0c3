"""The run folder's time series read back (issue 15): unit table, element table, long
voltage / loading tables, timestamped frames, warm-up, and the crash-safe stream format.

One short in-process run of the Bergwald scenario (winter workday 11:45-12:15, -0.5 MW
requested from 12:00, and 18:00, +1.8 MW) is checked frame by frame against independent
oracles: the units' applied activations add up to the delivered power; a pandapower AC
power flow of the building profiles plus the units' recorded injections reproduces the
grid simulator's slack power and voltages (so the grid saw exactly these unit powers);
every battery's state of charge follows its recorded power through its efficiency model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from scenarios.config import ConfigError, load_config, parse_config
from scenarios.results import TABLES, frame_message, read_table
from scenarios.runner import apply_overrides, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SLOTS = "47-49,72"


@pytest.fixture(scope="module")
def cfg():
    base = apply_overrides(load_config(ROOT / "scenarios" / "bergwald.toml"),
                           day_types="winter_workday", frames=SLOTS)
    return dataclasses.replace(base, plots=False)


@pytest.fixture(scope="module")
def run(cfg, tmp_path_factory):
    run_dir, summary = run_scenario(cfg, out=tmp_path_factory.mktemp("tables") / "run")
    return run_dir, {t: read_table(run_dir, t) for t in (*TABLES, "elements")}


def test_frames_are_timestamped_and_named_in_units(run):
    run_dir, t = run
    f = t["frames"]
    assert f["frame"].tolist() == [0, 1, 2, 3] and f["slot"].tolist() == [47, 48, 49, 72]
    assert [x.isoformat() for x in f["timestamp"]] == [
        "2010-01-20T11:45:00+01:00", "2010-01-20T12:00:00+01:00", "2010-01-20T12:15:00+01:00",
        "2010-01-20T18:00:00+01:00"]
    assert "cost_eur_per_h" in f and "cost_eur" not in f
    assert f["request_mw"].tolist() == [0.0, -0.5, -0.5, 1.8]
    assert (f["status"] == "optimal").all() and f["dispatched"].all()
    # per-frame extremes of the grid simulator's AC result, from the long tables
    vm = t["voltages"].groupby("frame")["vm_pu"]
    ld = t["loadings"].assign(a=t["loadings"]["loading_percent"].abs()).groupby("frame")["a"]
    np.testing.assert_allclose(f["vm_min_pu"], vm.min().to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(f["vm_max_pu"], vm.max().to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(f["loading_max_percent"], ld.max().to_numpy(), rtol=0, atol=0)
    assert f.loc[0, "message"] != ""      # no request: says so
    # the run folder explains itself; the streams are gone after the normal end
    assert (run_dir / "README.md").read_text() == (ROOT / "results" / "README.md").read_text()
    assert not list((run_dir / "timeseries").glob("*.arrows"))


def test_unit_activations_add_up_to_delivered_power(run):
    _, t = run
    f, u, sp = t["frames"].set_index("frame"), t["units"], t["setpoints"]
    assert u.groupby("frame").size().nunique() == 1 and u["unit_id"].nunique() > 500
    assert set(u["class"]) == {"battery", "ev", "heat_pump", "pv_curtailment", "flexible_load"}
    for k, rows in u.groupby("frame"):
        assert abs(rows["applied_mw"].sum() - f.loc[k, "delivered_mw"]) < 1e-9, k
        np.testing.assert_allclose(rows["p_mw"], rows["baseline_mw"] + rows["applied_mw"],
                                   rtol=0, atol=1e-12)
        ok = ~rows["clipped"]
        np.testing.assert_allclose(rows.loc[ok, "applied_mw"], rows.loc[ok, "requested_mw"],
                                   rtol=0, atol=1e-12)
        assert (rows["applied_mw"] <= rows["offered_up_mw"] + 1e-12).all()
        assert (rows["applied_mw"] >= rows["offered_down_mw"] - 1e-12).all()
        # the set-points the TSO sent, per unit
        want = sp[sp["frame"] == k].set_index("unit_id")["setpoint_mw"]
        got = rows.set_index("unit_id")["requested_mw"]
        np.testing.assert_allclose(got.reindex(want.index), want, rtol=0, atol=1e-12)
        assert (got.drop(want.index) == 0.0).all()
    assert (u.loc[u["frame"] == 0, "applied_mw"] == 0).all()
    assert u.loc[u["frame"] == 3, "applied_mw"].max() > 0      # discharging at 18:00
    assert u.loc[u["frame"] == 1, "applied_mw"].min() < 0      # charging at 12:00


def test_grid_saw_exactly_the_recorded_unit_injections(cfg, run):
    """AC oracle: building profiles + sum over the building's units of (p_mw - profile_mw)
    in a fresh pandapower power flow give the grid simulator's slack power and voltages."""
    import pandapower as pp

    from flexcore.grid.district_grid import building_table, district_net
    from simulators import building_profiles

    _, t = run
    f, u, vm, el = t["frames"], t["units"], t["voltages"], t["elements"]
    clock = cfg.clock()
    net, ids, load_idx, sgen_idx = district_net(cfg.grid)
    prof = building_profiles(building_table(cfg.buildings, cfg.grid), seed=cfg.seed,
                             pv_penetration=cfg.pv_penetration).for_frames(clock.frames)
    pos = {b: k for k, b in enumerate(prof.building_ids)}
    order = [pos[b] for b in ids]
    bus_of = el[el["kind"] == "bus"].set_index("element_id")["pp_index"]
    for k in f["frame"]:
        rows = u[u["frame"] == k]
        dp = (rows["p_mw"] - rows["profile_mw"]).groupby(rows["building"]).sum()
        net.load.loc[load_idx, "p_mw"] = prof.load_p_mw[k][order]
        net.load.loc[load_idx, "q_mvar"] = prof.load_q_mvar[k][order]
        net.sgen.loc[sgen_idx, "p_mw"] = (prof.pv_p_mw[k][order]
                                          + dp.reindex(list(ids), fill_value=0.0).to_numpy())
        pp.runpp(net, tolerance_mva=1e-10)
        assert abs(net.res_ext_grid.p_mw.sum() - f.loc[k, "p_slack_mw"]) < 1e-6, k
        v = vm[vm["frame"] == k]
        np.testing.assert_allclose(net.res_bus.vm_pu.loc[bus_of.loc[v["element_id"]]],
                                   v["vm_pu"], rtol=0, atol=1e-7)
        # the activation is a change of injection of exactly the delivered power
        assert abs((rows["p_mw"] - rows["baseline_mw"]).sum()
                   - f.loc[k, "delivered_mw"]) < 1e-9


def test_battery_soc_follows_integrated_power(cfg, run):
    """Every battery's recorded SOC (after each frame) against its recorded power through
    the efficiency model, starting from the fleet's initial SOC (same seed)."""
    from flexcore.fpu.assign import assign_units
    from flexcore.fpu.battery import HomeBattery
    from flexcore.fpu.registry import parse_fpu_config
    from flexcore.grid.district_grid import building_table
    from simulators import building_profiles

    _, t = run
    table = building_table(cfg.buildings, cfg.grid)
    units = assign_units(table, profiles=building_profiles(
        table, seed=cfg.seed, pv_penetration=cfg.pv_penetration),
        config=parse_fpu_config({"fpu": list(cfg.fpu)}), seed=cfg.seed)
    fresh = {x.unit_id: x for x in units if isinstance(x, HomeBattery)}
    b = t["units"][t["units"]["class"] == "battery"]
    assert set(b["unit_id"]) == set(fresh) and len(fresh) > 100
    dt = cfg.clock().frame_h
    moved = 0
    for uid, rows in b.groupby("unit_id"):
        x = fresh[uid]
        soc = x.soc
        for p, got in zip(rows.sort_values("frame")["p_mw"], rows.sort_values("frame")
                          ["state_soc"]):
            kwh = p * 1e3 * dt
            delta = -kwh / x.eta_discharge if p >= 0 else -kwh * x.eta_charge
            soc = min(max(soc + delta / x.capacity_kwh, x.soc_min), x.soc_max)
            assert got == pytest.approx(soc, abs=1e-12), uid
        moved += soc != x.soc
    assert moved > 10


def test_element_table_maps_every_result(run):
    _, t = run
    el = t["elements"].set_index("element_id")
    assert el.index.tolist() == list(range(len(el)))
    for name, kinds in (("voltages", {"bus"}), ("all_active_voltages", {"bus"}),
                        ("loadings", {"line", "trafo"}),
                        ("all_active_loadings", {"line", "trafo"})):
        df = t[name]
        assert set(el.loc[df["element_id"].unique(), "kind"]) == kinds, name
        want = el.index[el["kind"].isin(kinds)].to_numpy()
        for _, rows in df.groupby("frame"):   # every element once, in id order
            assert np.array_equal(rows["element_id"].to_numpy(), want), name
    assert list(t["voltages"].columns) == list(t["all_active_voltages"].columns) == [
        "frame", "element_id", "vm_pu"]
    assert list(t["loadings"].columns) == list(t["all_active_loadings"].columns) == [
        "frame", "element_id", "loading_percent"]
    p = t["predictions"]
    assert set(el.loc[p.loc[p["kind"] == "vm_pu", "element_id"], "kind"]) == {"bus"}
    assert set(el.loc[p.loc[p["kind"] == "loading_percent", "element_id"], "kind"]) <= {
        "line", "trafo"}
    ac = p.merge(t["voltages"], on=["frame", "element_id"])
    assert (ac["ac"] == ac["vm_pu"]).all() and len(ac)
    # every building hangs at exactly one bus; transformers own their LV side
    buses = el[el["kind"] == "bus"]
    at_bus = [b for x in buses["buildings"] for b in x]
    assert len(at_bus) == len(set(at_bus)) and set(t["units"]["building"]) <= set(at_bus)
    lv = buses[buses["vn_kv"] < 1.0]
    assert lv["transformer"].notna().all()
    assert lv.loc[lv["buildings"].map(len) > 0, "feeder"].notna().all()


def test_warmup_frames_give_the_states_of_the_longer_run(cfg, run, tmp_path):
    """Slot 49 after two warm-up frames (47, 48) = slot 49 of the run from 47."""
    _, t = run
    warm = dataclasses.replace(cfg, slots=(49,), warmup_frames=2)
    run_dir, summary = run_scenario(warm, out=tmp_path / "warm")
    f = read_table(run_dir, "frames")
    assert f["frame"].tolist() == [0] and f["slot"].tolist() == [49]
    assert summary["warmup_frames"] == 2 and summary["frames"] == 1
    cols = ["request_mw", "delivered_mw", "cost_eur_per_h", "vm_mae_pu", "p_slack_mw",
            "vm_max_pu", "loading_max_percent"]
    long = t["frames"][t["frames"]["slot"] == 49]
    np.testing.assert_allclose(f[cols].to_numpy(float), long[cols].to_numpy(float),
                               rtol=1e-9, atol=1e-12)
    u = read_table(run_dir, "units")
    ref = t["units"][t["units"]["frame"] == 2]
    np.testing.assert_allclose(u["state_soc"].to_numpy(float), ref["state_soc"].to_numpy(float),
                               rtol=0, atol=1e-12, equal_nan=True)
    # the warm-up mattered: without it the batteries would start fresh at 12:15, but they
    # charged at 12:00 (the -0.5 MW request)
    u48 = t["units"][(t["units"]["frame"] == 1) & (t["units"]["class"] == "battery")]
    charged = u48[u48["applied_mw"] < 0]
    assert len(charged) >= 5 and (charged["state_soc"] > 0.5).all()
    assert (ref.set_index("unit_id").loc[charged["unit_id"], "state_soc"] > 0.5).all()


def test_warmup_frames_checked_at_parse_time(tmp_path, capsys):
    from scenarios.cli import main

    for value, msg in ((-1, r"\[scenario\] warmup_frames: must be in 0\.\."),
                       ("8", r"\[scenario\] warmup_frames: expected int"),
                       (True, r"\[scenario\] warmup_frames: expected int")):
        with pytest.raises(ConfigError, match=msg):
            parse_config({"scenario": {"warmup_frames": value}})
    assert parse_config({"scenario": {"warmup_frames": 8}}).warmup_frames == 8
    toml = tmp_path / "s.toml"
    toml.write_text('[scenario]\nslots = "72"\n')
    assert main(["run", "--check", str(toml), "--warmup-frames", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--warmup-frames: must be in 0.." in err


def test_frame_messages_say_why():
    unsafe = frame_message({"status": "unsafe", "dispatched": False, "rounds": 2,
                            "request_mw": 1.8}, {}, {})
    assert unsafe == "unsafe in AC after 2 refinement round(s): not dispatched"
    assert frame_message({"status": "infeasible", "dispatched": False, "request_mw": 9.0,
                          "message": "request beyond the offers"}, {}, {}) == \
        "infeasible: not dispatched; request beyond the offers"
    assert frame_message({}, {}, {}) == "no clearing record for this frame"
    assert frame_message({"status": "optimal", "dispatched": True, "request_mw": 0.0},
                         {}, {}) == "no request"
    assert frame_message({"status": "optimal", "dispatched": True, "request_mw": 1.0},
                         {}, {"ac_converged": True}) == ""
    assert "AC power flow did not converge" in frame_message(
        {"status": "optimal", "dispatched": True, "request_mw": 1.0}, {},
        {"ac_converged": False})


def test_stream_reader_ignores_a_torn_tail(tmp_path):
    """A kill in the middle of a batch: read_table returns the complete frames, restricted
    to the frames whose row reached the frames stream."""
    from scenarios.results import STREAM_SUFFIX, _schema, _Stream

    ts = tmp_path / "timeseries"
    ts.mkdir()
    vm = _Stream(ts / f"voltages{STREAM_SUFFIX}", _schema("voltages", ()))
    fr = _Stream(ts / f"frames{STREAM_SUFFIX}", _schema("frames", ()))
    for k in range(3):
        vm.write({"frame": [k, k], "element_id": [0, 1], "vm_pu": [1.0 + k, 0.99]})
        if k < 2:   # frame 2's row never reached the frames stream
            fr.write({"frame": [k]} | {c: [None] for c in _schema("frames", ()).names
                                       if c != "frame"})
    vm.close()
    fr.close()
    assert read_table(tmp_path, "voltages")["frame"].tolist() == [0, 0, 1, 1]
    path = ts / f"frames{STREAM_SUFFIX}"
    data = path.read_bytes()
    path.write_bytes(data[:-20])    # the last frame's batch cut off
    assert read_table(tmp_path, "frames")["frame"].tolist() == [0]
    assert read_table(tmp_path, "voltages")["frame"].tolist() == [0, 0]
    with pytest.raises(FileNotFoundError, match="no table 'units'"):
        read_table(tmp_path, "units")
    path.unlink()   # killed before any frame's row was written: no frame counts
    assert read_table(tmp_path, "voltages").empty
