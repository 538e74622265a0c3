"""``flexcosim sweep``: four short points on a Dask LocalCluster with two workers, the combined
summary against the run folders, a restart that runs only what did not finish (slow: about
1-3 min on 2 busy cores, mostly worker start-up and imports); by default a failing point
recorded while the others go on, a restart that skips the finished point and reruns the
failed one (in this process), and sweep files rejected with one line naming the key
(exit 2)."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from scenarios.cli import main
from scenarios.sweep import load_sweep, run_sweep

# a short scenario: the SimBench LV grid with one house per load, two frames of one day
BASE = """[scenario]
name = "short"
seed = 42
grid = "simbench:1-LV-semiurb4--0-no_sw"
buildings = "grid_loads"
day_types = ["winter_workday"]
slots = "72-73"
[request]
default_mw = 0.0
[[request.window]]
start = "18:00"
end = "18:30"
mw = 0.1
[results]
plots = false
"""
SWEEP = """[sweep]
name = "short"
base = "base.toml"
mode = "product"
[vary]
"scenario.seed" = [1, 2]
"request.default_mw" = [0.0, -0.05]
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "base.toml").write_text(BASE)
    (d / "sweep.toml").write_text(SWEEP)
    return d


@pytest.fixture(scope="module")
def swept(files):
    """The sweep of four points on a LocalCluster with two worker processes."""
    out = files / "out"
    assert main(["sweep", str(files / "sweep.toml"), "--workers", "2", "--out", str(out),
                 "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_four_points_on_two_workers_match_their_run_folders(swept):
    table = pd.read_parquet(swept / "summary.parquet")
    assert len(table) == 4 and (table["status"] == "done").all()
    assert sorted(zip(table["scenario.seed"], table["request.default_mw"])) == [
        (1, -0.05), (1, 0.0), (2, -0.05), (2, 0.0)]
    assert table["point"].is_unique and (swept / "comparison.png").stat().st_size > 1000
    for row in table.to_dict("records"):
        run = swept / row["run_dir"]
        frames = pd.read_parquet(run / "timeseries" / "frames.parquet")
        summary = json.loads((run / "summary.json").read_text())
        cfg = json.loads((run / "config.resolved.json").read_text())
        assert cfg["seed"] == row["scenario.seed"]
        assert cfg["request_default_mw"] == row["request.default_mw"]
        assert frames["request_mw"].tolist() == [0.1, 0.1]  # the window overrides the default
        assert row["frames"] == len(frames) == 2
        assert row["cost_eur"] == pytest.approx(frames["cost_eur_per_h"].fillna(0).sum() * 0.25,
                                                rel=1e-12)
        assert row["cost_eur"] == summary["cost_eur"] > 0
        assert row["delivered_up_mwh"] == pytest.approx(
            frames["delivered_mw"].clip(lower=0).sum() * 0.25, rel=1e-12)
    # different seeds draw different fleets: the same request costs differently
    by_seed = table.groupby("scenario.seed")["cost_eur"].first()
    assert by_seed[1] != by_seed[2]


@pytest.mark.slow
def test_restart_runs_only_unfinished_and_failed_points(swept, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(swept, copy)
    table = pd.read_parquet(copy / "summary.parquet")
    missing, failed, *kept = table["point"].tolist()
    (copy / "points" / missing / "point.json").unlink()         # killed before its record
    rec = json.loads((copy / "points" / failed / "point.json").read_text())
    (copy / "points" / failed / "point.json").write_text(json.dumps(
        rec | {"status": "failed", "error": "RuntimeError: boom"}))
    stamps = {p: (copy / "points" / p / "summary.json").stat().st_mtime_ns for p in kept}
    # resumed in this process (workers 0): the same ids, two points run again
    assert main(["sweep", "--resume", str(copy), "--workers", "0", "--quiet"]) == 0
    again = pd.read_parquet(copy / "summary.parquet")
    assert (again["status"] == "done").all() and again["point"].tolist() == table["point"].tolist()
    assert {p: (copy / "points" / p / "summary.json").stat().st_mtime_ns for p in kept} == stamps
    assert sorted(p.name for p in (copy / "attempts").iterdir()) == sorted(
        [f"{missing}-1", f"{failed}-1"])                        # set aside, not overwritten
    cols = ["point", "scenario.seed", "request.default_mw", "frames", "cost_eur",
            "delivered_up_mwh", "vm_mae_pu_max"]
    pd.testing.assert_frame_equal(again[cols], table[cols])     # reproducible by seed


def test_a_failing_point_is_recorded_and_a_restart_reruns_only_it(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "s.toml").write_text('[sweep]\nbase = "base.toml"\nmode = "zip"\n[vary]\n'
                                     '"scenario.grid" = ["missing.json", '
                                     '"simbench:1-LV-semiurb4--0-no_sw"]\n'
                                     '"scenario.slots" = ["72", "72"]\n')
    sweep = load_sweep(tmp_path / "s.toml")
    out = tmp_path / "out"
    records = run_sweep(sweep, sweep_dir=out, workers=0)
    assert [r["status"] for r in records] == ["failed", "done"]
    assert "missing.json" in records[0]["error"] and "\n" not in records[0]["error"]
    bad, good = (p.point_id for p in sweep.points)
    run = pd.read_parquet(out / "points" / good / "timeseries" / "frames.parquet")
    assert records[1]["frames"] == len(run) == 1
    assert records[1]["cost_eur"] == pytest.approx(run["cost_eur_per_h"].sum() * 0.25, rel=1e-12)
    stamp = (out / "points" / good / "summary.json").stat().st_mtime_ns
    again = run_sweep(load_sweep(tmp_path / "s.toml"), sweep_dir=out, workers=0)
    assert [r["status"] for r in again] == ["failed", "done"]
    assert (out / "points" / good / "summary.json").stat().st_mtime_ns == stamp  # skipped
    assert [p.name for p in (out / "attempts").iterdir()] == [f"{bad}-1"]  # rerun, kept
    table = pd.read_parquet(out / "summary.parquet")
    assert table["status"].tolist() == ["failed", "done"]
    assert table["scenario.grid"].tolist() == ["missing.json", "simbench:1-LV-semiurb4--0-no_sw"]


@pytest.mark.parametrize("text,message", [
    ('[sweep]\nbase = "base.toml"\n[vary]\n"scenario.sed" = [1]\n',
     r"\[vary\] 'scenario.sed': unknown key 'sed' of \[scenario\]"),
    ('[sweep]\nbase = "base.toml"\n[vary]\n"scenario.pv_penetration" = [0.5, 2.0]\n',
     r"point #2 scenario.pv_penetration=2.0: \[scenario\] pv_penetration: must be in \[0, 1\]"),
    ('[sweep]\nbase = "base.toml"\nmode = "zip"\n[vary]\n"scenario.seed" = [1, 2]\n'
     '"request.default_mw" = [0.0]\n', r"mode 'zip' needs lists of one length"),
    ('[sweep]\nbase = "nope.toml"\n[vary]\n"scenario.seed" = [1]\n',
     r"\[sweep\] base: scenario file not found"),
    ('[sweep]\nbase = "base.toml"\nmode = "grid"\n[vary]\n"scenario.seed" = [1]\n',
     r"\[sweep\] mode: expected one of \['product', 'zip'\]"),
    ('[sweep]\nbase = "base.toml"\n[vary]\n"scenario.seed" = 1\n',
     r"\[vary\] 'scenario.seed': expected a non-empty list"),
    ('[sweep]\nbase = "base.toml"\n[vary]\n"scenario.seed" = [1, 1]\n',
     r"point #2 .* is the same scenario as point #1"),
])
def test_bad_sweep_file_exits_2_with_one_line(tmp_path, capsys, text, message):
    import re

    (tmp_path / "base.toml").write_text(BASE)
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()
