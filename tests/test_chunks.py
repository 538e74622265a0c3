"""Chunked calendar runs (``[calendar] chunks``, ``flexcosim run --chunks K``).

Real runs of four workdays at 60 minutes (eight frames a day) on a SimBench LV grid with the
default fleet and requests morning and evening: the sequential run against the same span in
two chunks (the
second after one warm-up day), merged into one run folder. The first chunk's rows equal the
sequential run's in every table; the second chunk covers the same frames, with the same
exogenous loads and PV, and its stateless units (PV curtailment) act exactly as in the
sequential run: only units with a state (batteries, EVs, heat pumps) can differ, through
their state at the boundary. The folder reads like any run folder and its summary totals are
the sums over its frames. By default the chunks run one after another in this process (the
executor is the sweep's, tested in tests/test_sweep.py); the slow test runs them through the
command line in two processes. Also: the chunk layout, and bad input in one line (exit 2).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from scenarios.chunks import plan_chunks, run_chunked, with_chunks
from scenarios.cli import main
from scenarios.config import ConfigError, load_config, parse_config
from scenarios.results import TABLES, read_table

SPAN = ("2025-01-06", "2025-01-10")   # Monday .. Thursday
PER_DAY = 8                           # slots 06-09 and 17-20 h at 60 minutes
N = 4 * PER_DAY
SCENARIO = f"""[scenario]
name = "chunks"
grid = "simbench:1-LV-semiurb4--0-no_sw"
buildings = "grid_loads"
seed = 4
resolution_min = 60
slots = "6-9,17-20"
[calendar]
start = "{SPAN[0]}"
end = "{SPAN[1]}"
warmup_days = 1
[request]
default_mw = 0.0
[[request.window]]
start = "07:00"
end = "09:00"
mw = 0.05
[[request.window]]
start = "18:00"
end = "20:00"
mw = -0.05
[results]
plots = false
"""
#: columns that differ between any two runs: timings, and the per-run pseudonyms and keys
RUN_LOCAL = {"wall_time_s", "build_time_s", "solve_time_s", "dso_time_s", "bid_id", "key"}
KEYS = {"units": ["frame", "unit_id"], "bids": ["frame", "unit_id", "volume_mw"],
        "setpoints": ["frame", "unit_id"], "predictions": ["frame", "element_id", "kind"]}


def _table(run_dir, name: str) -> pd.DataFrame:
    t = read_table(run_dir, name)
    keys = KEYS.get(name, ["frame", "element_id"] if "element_id" in t else ["frame"])
    return t.drop(columns=[c for c in RUN_LOCAL if c in t]).sort_values(keys).reset_index(
        drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from scenarios.runner import run_scenario

    tmp = tmp_path_factory.mktemp("chunks")
    (tmp / "s.toml").write_text(SCENARIO)
    cfg = load_config(tmp / "s.toml")
    seq, _ = run_scenario(cfg, out=tmp / "seq")
    chunked = with_chunks(cfg, chunks=2)
    run_dir, summary = run_chunked(chunked, out=tmp / "chunked", workers=0)
    return cfg, seq, run_dir, summary


def test_plan_of_a_year_at_midnights_with_warm_up():
    doc = {"scenario": {"day_types": ["winter_workday", "winter_sunday"]},
           "calendar": {"year": 2025, "chunks": 3, "warmup_days": 2}}
    cfg = parse_config(doc)
    full = parse_config(doc | {"scenario": {}})
    chunks = plan_chunks(cfg)
    clock = cfg.clock()
    assert [c.first_frame for c in chunks] == [0, chunks[0].frames,
                                               chunks[0].frames + chunks[1].frames]
    assert sum(c.frames for c in chunks) == len(clock)
    work = [c.frames + c.warmup_frames for c in chunks]    # balanced, warm-up included
    assert max(work) - min(work) <= 3 * 96
    for c in chunks[1:]:
        first = clock.frames[c.first_frame]
        assert first.start.isoformat() == c.start and c.start.endswith("T00:00:00")
        assert pd.Timestamp(c.start) - pd.Timestamp(c.run_start) == pd.Timedelta(days=2)
        # the warm-up runs the frames of the span's day types in those two days
        warm = [f for f in clock.frames if c.run_start <= f.start.isoformat() < c.start]
        assert c.warmup_frames == len(warm)
    assert chunks[0].warmup_frames == 0 and chunks[0].run_start == chunks[0].start
    year = plan_chunks(dataclasses.replace(full, calendar=dataclasses.replace(
        full.calendar, chunks=2)))
    assert [(c.start, c.frames, c.warmup_frames) for c in year] == [
        ("2025-01-01T00:00:00", 183 * 96, 0), ("2025-07-03T00:00:00", 182 * 96, 2 * 96)]


def test_first_chunk_equals_the_sequential_run(runs):
    _, seq, run_dir, summary = runs
    cut = summary["chunk_layout"][1]["first_frame"]
    assert cut == 2 * PER_DAY and summary["chunks_failed"] == 0 and summary["frames_missing"] == 0
    for name in TABLES:
        a, b = _table(seq, name), _table(run_dir, name)
        pd.testing.assert_frame_equal(a[a["frame"] < cut].reset_index(drop=True),
                                      b[b["frame"] < cut].reset_index(drop=True), obj=name)


def test_second_chunk_differs_only_through_unit_states(runs):
    _, seq, run_dir, summary = runs
    cut = summary["chunk_layout"][1]["first_frame"]
    a, b = _table(seq, "frames"), _table(run_dir, "frames")
    assert b["frame"].tolist() == list(range(N))
    exogenous = ["frame", "timestamp", "day_type", "slot", "request_mw"]
    pd.testing.assert_frame_equal(a[exogenous], b[exogenous])
    ua, ub = _table(seq, "units"), _table(run_dir, "units")
    fixed = ["frame", "unit_id", "building", "class", "profile_mw"]
    pd.testing.assert_frame_equal(ua[fixed], ub[fixed])     # the same loads and PV
    stateless = (ua["class"] == "pv_curtailment") & (ua["frame"] >= cut)
    assert stateless.sum() == 25 * 2 * PER_DAY
    pd.testing.assert_frame_equal(ua[stateless], ub[stateless])
    differ = ua.loc[(ua["frame"] >= cut) & ~np.isclose(ua["state_soc"], ub["state_soc"],
                                                       equal_nan=True), "class"]
    assert len(differ) and set(differ) <= {"battery", "ev", "heat_pump"}


def test_the_folder_reads_like_a_run_folder(runs):
    cfg, _, run_dir, summary = runs
    frames = read_table(run_dir, "frames")
    assert frames["timestamp"].tolist() == [f.timestamp for f in cfg.clock().frames]
    part = read_table(run_dir, "units", columns=["frame", "p_mw"], frames=range(12, 20))
    assert sorted(set(part["frame"])) == list(range(12, 20))
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["frames"] == N and stored["chunks"] == 2 and stored["warmup_days"] == 1
    assert stored["warmup_frames"] == PER_DAY         # the second chunk's warm-up day
    assert stored["cost_eur"] == pytest.approx(frames["cost_eur_per_h"].sum() * 1.0, rel=1e-12)
    dlv = frames["delivered_mw"].fillna(0.0)
    assert stored["delivered_up_mwh"] == pytest.approx(dlv.clip(lower=0).sum(), rel=1e-12)
    assert stored["delivered_down_mwh"] == pytest.approx(-dlv.clip(upper=0).sum(), rel=1e-12)
    assert pd.read_csv(run_dir / "frames.csv")["frame"].tolist() == list(range(N))
    again = load_config(run_dir / "config.resolved.toml")
    assert (again.calendar.chunks, again.calendar.warmup_days) == (2, 1)
    layout = json.loads((run_dir / "chunks.json").read_text())["layout"]
    assert [(c["status"], c["run_dir"]) for c in layout] == [("done", "chunks/00"),
                                                             ("done", "chunks/01")]
    assert not list((run_dir / "chunks").rglob("*.parquet"))   # merged, then removed
    bids = read_table(run_dir, "bids")
    pseudo = json.loads((run_dir / "dso" / "bid_pseudonyms.json").read_text())
    assert set(bids["bid_id"]) <= set(pseudo)                # both chunks' pseudonyms
    assert (bids["unit_id"] == bids["bid_id"].map(lambda b: pseudo[b]["unit_id"])).all()


@pytest.mark.parametrize("argv,message", [
    (["--chunks", "5"], "[calendar] chunks: 5 chunks for a span with frames on 4 date(s)"),
    (["--chunks", "0"], "--chunks: [calendar] chunks: must be in 1..366, got 0"),
    (["--warmup-days", "-1"], "--warmup-days: [calendar] warmup_days: must be in 0..366"),
])
def test_bad_chunks_exit_2_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "s.toml").write_text(SCENARIO)
    assert main(["run", "--check", str(tmp_path / "s.toml"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_chunks_need_a_calendar(tmp_path, capsys):
    (tmp_path / "s.toml").write_text('[scenario]\ngrid = "simbench:1-LV-semiurb4--0-no_sw"\n'
                                     'buildings = "grid_loads"\n')
    assert main(["run", "--check", str(tmp_path / "s.toml"), "--chunks", "2"]) == 2
    assert "--chunks: only calendar runs" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"\[calendar\] chunks: expected int"):
        parse_config({"scenario": {}, "calendar": {"year": 2025, "chunks": "2"}})


def test_check_prints_the_layout(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SCENARIO)
    assert main(["run", "--check", str(tmp_path / "s.toml"), "--chunks", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "chunk 0: 2025-01-06T00:00 .. 2025-01-08T00:00: frames 0..15 (16), warm-up from "
        "2025-01-06T00:00 (0 frames)",
        "chunk 1: 2025-01-08T00:00 .. 2025-01-10T00:00: frames 16..31 (16), warm-up from "
        "2025-01-07T00:00 (8 frames)"]


@pytest.mark.slow
def test_cli_runs_chunks_in_two_processes(runs, tmp_path, capsys):
    cfg, _, in_process, _ = runs
    (tmp_path / "s.toml").write_text(SCENARIO)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "s.toml"), "--chunks", "2", "--out", str(out),
                 "--quiet"]) == 0
    assert "warm-up frames (run, not recorded)      8" in capsys.readouterr().out
    for name in TABLES:   # the same runs in worker processes: the same rows
        pd.testing.assert_frame_equal(_table(in_process, name), _table(out, name), obj=name)


FAILING_SIM = '''
from scenarios.examples.ext_battery import BatterySim


class FailingSim(BatterySim):
    """The example battery, broken: its simulator raises from mosaik time FAIL_AT_S on."""

    def step(self, time, inputs, max_advance):
        if time >= FAIL_AT_S:
            raise RuntimeError("injected failure at %d s" % time)
        return super().step(time, inputs, max_advance)
'''


def test_a_failing_chunk_is_recorded_and_the_others_frames_are_kept(tmp_path, monkeypatch):
    """A unit simulator that breaks after 20 frames of a run: only the second chunk (8
    warm-up frames + 16) gets there; the first chunk's 16 frames and the second's finished
    ones are merged, the failure is in chunks.json and the summary."""
    (tmp_path / "failing_sim.py").write_text(f"FAIL_AT_S = {20 * 3600}\n" + FAILING_SIM)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "s.toml").write_text(SCENARIO + '''
[[external_unit]]
name = "broken_battery"
building = "LV4.101 Load 1"
python = "failing_sim:FailingSim"
model = "Battery"
sim_params = { step_size = 3600 }
''')
    cfg = with_chunks(load_config(tmp_path / "s.toml"), chunks=2)
    run_dir, summary = run_chunked(cfg, out=tmp_path / "run", workers=0)
    layout = json.loads((run_dir / "chunks.json").read_text())["layout"]
    assert [c["status"] for c in layout] == ["done", "failed"]
    assert "injected failure at 72000 s" in layout[1]["error"] and "\n" not in layout[1]["error"]
    assert summary["chunks_failed"] == 1 and summary["chunk_layout"][1]["status"] == "failed"
    frames = read_table(run_dir, "frames")["frame"].tolist()
    kept = frames[2 * PER_DAY:]           # the second chunk's finished frames, from 16 on
    assert frames[:2 * PER_DAY] == list(range(2 * PER_DAY))
    assert kept == list(range(2 * PER_DAY, 2 * PER_DAY + len(kept))) and len(kept) <= 12
    assert summary["frames_missing"] == N - len(frames) >= 4
    units = read_table(run_dir, "units", columns=["frame"])
    assert sorted(set(units["frame"])) == frames
