"""Crashes and processes: a run killed (SIGKILL) or interrupted (SIGINT) midway keeps the
time series of its finished frames, and leaves no simulator process behind.

Each test starts ``python -m scenarios.cli run`` as a real subprocess (its own session, as a
shell would start it) on a short winter-workday scenario, waits until the Recorder has
written a Parquet part with finished frames plus at least one more finished frame, then
signals it. Children are found through ``/proc`` (Linux).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flexcore.runs import write_toml
from scenarios.config import load_config
from scenarios.runner import scenario_document

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="process tree read from /proc")
TABLES = ("frames", "voltages", "loadings", "bids")
CHILD_MODULES = ("simulators.building_sim", "simulators.grid_sim", "simulators.fpu_sim",
                 "agents.dso_agent", "agents.tso_agent", "agents.validator")


def _scenario(tmp_path: Path, starter: str) -> Path:
    import dataclasses

    cfg = load_config(ROOT / "scenarios" / "bergwald.toml")
    cfg = dataclasses.replace(cfg, starter=starter, plots=False, package_exchange="auto")
    path = tmp_path / f"{starter}.toml"
    write_toml(path, scenario_document(cfg), header="test_crash scenario")
    return path


def _children(pid: int) -> set[int]:
    """All descendants of ``pid`` (from /proc/<p>/stat: field 4 is the parent pid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        out |= kids
        todo += list(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp_path: Path, starter: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scenarios.cli", "run", str(_scenario(tmp_path, starter)),
           "--quiet", "--day-types", "winter_workday", "--frames", "60-95", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, out


def _wait_for_frames(proc: subprocess.Popen, out: Path, *, timeout_s: float = 400) -> set[int]:
    """Wait until a frames part exists and frames.csv has a frame beyond it; returns the
    children pids seen while running."""
    t0, kids = time.monotonic(), set()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, proc.communicate()
        kids |= _children(proc.pid)
        parts = sorted(out.glob("timeseries/frames/part-*.parquet"))
        csv = out / "timeseries" / "frames.csv"
        if parts and csv.is_file():
            done = len(pd.read_csv(csv))
            if done > sum(len(pd.read_parquet(p)) for p in parts):
                return kids | _children(proc.pid)
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no finished frames after {timeout_s} s")


def _check_finished_frames(out: Path) -> pd.DataFrame:
    """The parts of every table read as one dataset: the same finished frames everywhere,
    the same numbers as frames.csv, real voltages, loadings and bids."""
    ts = out / "timeseries"
    csv = pd.read_csv(ts / "frames.csv")
    tables = {t: pd.read_parquet(ts / t) for t in TABLES}   # the folder: one dataset
    frames = tables["frames"].sort_values("frame")
    got = frames["frame"].tolist()
    assert got and got == list(range(len(got)))                    # a prefix, in order
    assert got == csv["frame"].tolist()[:len(got)]
    for col in ("request_mw", "delivered_mw", "vm_mae_pu", "loading_mae_percent"):
        np.testing.assert_allclose(frames[col].to_numpy(float),
                                   csv[col].to_numpy(float)[:len(got)], rtol=1e-12)
    for t in ("voltages", "loadings"):
        df = tables[t].sort_values("frame")
        assert df["frame"].tolist() == got
        values = df.drop(columns="frame").to_numpy(float)
        assert values.shape[1] > 100 and np.isfinite(values).all()
    vm = tables["voltages"].drop(columns="frame").to_numpy(float)
    assert 0.9 < vm.min() and vm.max() < 1.1
    bids = tables["bids"]
    assert set(bids["frame"]) == set(got)
    assert (bids.groupby("frame").size().reindex(got).to_numpy()
            == frames["n_offers"].to_numpy(int)).all()
    return frames


def _gone(pids: set[int], *, timeout_s: float = 15) -> set[int]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        left = {p for p in pids if _alive(p)}
        if not left:
            return set()
        time.sleep(0.2)
    return left


@pytest.mark.parametrize("starter", ["cmd"])  # the Recorder is in the runner either way
def test_sigkill_keeps_finished_frames_and_no_child_survives(tmp_path, starter):
    proc, out = _start(tmp_path, starter)
    kids = _wait_for_frames(proc, out)
    if starter == "cmd":  # the six simulators run as children
        cmdlines = {Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    for p in kids if _alive(p)}
        assert all(any(m in c for c in cmdlines) for m in CHILD_MODULES), cmdlines
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = _gone(kids)
    for p in left:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not left, f"orphaned simulator processes {sorted(left)}"
    assert not (out / "timeseries" / "frames.parquet").exists()    # the end never came
    _check_finished_frames(out)


def test_sigint_one_line_keeps_frames_and_stops_children(tmp_path):
    proc, out = _start(tmp_path, "cmd")
    kids = _wait_for_frames(proc, out)
    os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C in a terminal: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["flexcosim: interrupted"], err
    left = _gone(kids)
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"simulator processes left after Ctrl-C {sorted(left)}"
    frames = _check_finished_frames(out)
    # every frame in frames.csv is in the parts: the runner flushed them on the interrupt
    assert len(frames) == len(pd.read_csv(out / "timeseries" / "frames.csv"))
