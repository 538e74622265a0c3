"""End-to-end co-simulation runs (real pandapower, HiGHS, mosaik; no mocks).

Topology (scenarios/bergwald.py)::

    BuildingSim --load/PV--> GridSim --Vm,loading--> Validator --> Recorder
        |                      ^ dP
        +--load/PV--+          |
    [group]         v          |
      FPUSim --offers,dP_base--> DSOAgent --package--> TSOAgent
        ^                        ^------weak: clearing----+  |
        +-------------weak: set-points-----------------------+

Frames: winter workday 07:15 (0.5 MW request), 12:00 (-0.5 MW) and 18:00 (1.8 MW).
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest

from scenarios.config import ConfigError, load_config, parse_config
from scenarios.runner import apply_overrides, run_scenario

TABLE1_VM_MAE = 2.3e-5
TABLE1_LOADING_MAE = 6.1e-3
AC_TOL_PERCENT = 1e-6   # limits are checked in AC with this tolerance (loading) ...
AC_TOL_PU = 1e-9        # ... and this one (voltage), as in Linearizer.validate
RUN_FILES = ["config.resolved.json", "versions.json", "summary.json", "summary.csv", "frames.csv",
             "dso/KEYMAP.json", "plots/over_time.png"] + [
    f"timeseries/{n}" for n in ("frames.csv", "frames.parquet", "bids.parquet",
                                "setpoints.parquet", "voltages.parquet", "loadings.parquet")]
COMPARE = ["status", "request_mw", "delivered_mw", "cost_eur", "rounds", "vm_mae_pu",
           "loading_mae_percent", "ac_violations", "ac_max_loading_percent", "p_slack_mw"]


@pytest.fixture(scope="module")
def cfg():
    return apply_overrides(load_config("scenarios/bergwald.toml"), day_types="winter_workday",
                           frames="29,48,72")


@pytest.fixture(scope="module")
def run_a(cfg, tmp_path_factory):
    return run_scenario(cfg, out=tmp_path_factory.mktemp("a") / "run")


def _frames(run):
    return pd.read_parquet(run[0] / "timeseries" / "frames.parquet")


def test_frames_end_to_end(run_a):
    f = _frames(run_a)
    assert len(f) == 3 and f["request_mw"].tolist() == [0.5, -0.5, 1.8]
    ok = f[f["status"] == "optimal"]
    assert len(ok) == 3
    assert (ok["delivered_mw"] - ok["request_mw"]).abs().max() < 1e-6
    assert f["ac_converged"].all() and (f["ac_violations"] == 0).all()
    assert f["ac_max_loading_percent"].max() <= 100 + AC_TOL_PERCENT
    assert (f["ac_vm_min_pu"] >= 0.95 - AC_TOL_PU).all() and (f["ac_vm_max_pu"] <= 1.05 + AC_TOL_PU).all()
    assert (ok["vm_mae_pu"] <= TABLE1_VM_MAE).all()
    assert (ok["loading_mae_percent"] <= TABLE1_LOADING_MAE).all()
    # set-points add up to the delivered balancing power
    sp = pd.read_parquet(run_a[0] / "timeseries" / "setpoints.parquet")
    per_frame = sp.groupby("frame")["setpoint_mw"].sum().reindex(f["frame"], fill_value=0.0)
    assert (per_frame.to_numpy() - f["delivered_mw"].to_numpy()).__abs__().max() < 1e-6


def test_results_folder_complete(run_a):
    missing = [n for n in RUN_FILES if not (run_a[0] / n).is_file()]
    assert not missing


def test_same_seed_same_numbers(cfg, run_a, tmp_path):
    b = run_scenario(cfg, out=tmp_path / "b")
    pd.testing.assert_frame_equal(_frames(run_a)[COMPARE], _frames(b)[COMPARE])


def test_separate_processes_same_numbers(cfg, run_a, tmp_path):
    c = run_scenario(dataclasses.replace(cfg, starter="cmd", plots=False), out=tmp_path / "c")
    pd.testing.assert_frame_equal(_frames(run_a)[COMPARE], _frames(c)[COMPARE], rtol=1e-9)


def test_nonconverging_frame_is_recorded_and_run_goes_on(cfg, tmp_path):
    # test-only knob [test] extra_load: 50 MW unforecast load in GridSim at frame 0
    bad = dataclasses.replace(cfg, slots=(29, 48), extra_load=((0, 50.0),), plots=False)
    run_dir, summary = run_scenario(bad, out=tmp_path / "nc")
    f = pd.read_parquet(run_dir / "timeseries" / "frames.parquet")
    assert f["ac_converged"].tolist() == [False, True]
    assert summary["nonconverged_ac_frames"] == 1


def test_malformed_toml_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dso\] refine_rounds"):
        parse_config({"scenario": {}, "dso": {"refine_rounds": "two"}})
    with pytest.raises(ConfigError, match=r"\[simulation\] starter"):
        parse_config({"scenario": {}, "simulation": {"starter": "fork"}})
    with pytest.raises(ConfigError, match=r"\[dso\] unknown key\(s\) \['refine_round'\]"):
        parse_config({"scenario": {}, "dso": {"refine_round": 2}})
    p = tmp_path / "bad.toml"
    p.write_text("[scenario]\nslots = '99-120'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: \[scenario\] slots"):
        load_config(p)


def test_tso_agent_imports_no_grid_code():
    code = ("import sys, agents.tso_agent; bad = [m for m in sys.modules if m == 'pandapower' "
            "or m.startswith(('flexcore.grids', 'flexcore.gridgen', 'flexcore.dso', "
            "'flexcore.sensitivity', 'flexcore.ppinternals'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
