"""Crashes and processes: a run killed (SIGKILL) or interrupted (SIGINT) midway keeps the
time series of its finished frames, and leaves no simulator process behind.

Each test starts ``python -m scenarios.cli run`` as a real subprocess (its own session, as a
shell would start it) on three winter day types, waits until the Recorder has
recorded a few finished frames (``timeseries/frames.csv``), then signals it. After the kill
every frame listed in ``frames.csv`` has its rows in every table, read with
``scenarios.results.read_table`` from the Arrow streams (``timeseries/<table>.arrows``, one
compressed record batch per table and write of the Recorder's buffered frames), also in
parts (``columns=``, ``frames=``). Children are found through ``/proc`` (Linux).
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
from scenarios.results import FLUSH_FRAMES
from scenarios.runner import scenario_document

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="process tree read from /proc")
TABLES = ("frames", "voltages", "loadings", "bids", "units", "setpoints")
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
           "--quiet", "--day-types", "winter_workday,winter_saturday,winter_sunday",
           "--out", str(out)]
    # 288 frames (the Recorder writes every 16 frames or 2 s): long enough that the signal
    # always lands mid-run (a run of 72 frames could end before it, at ~25 frames/s)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    return proc, out


def _default_sigint() -> None:
    """Ctrl-C's default action in the run, whatever this test inherited: a shell starts a
    background job with SIGINT ignored, and a CI supervisor may run it with SIGINT blocked
    (both are inherited across exec; a blocked SIGINT stays pending and the run ends
    normally, 0 instead of 130)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _wait_for_frames(proc: subprocess.Popen, out: Path, *, frames: int = 3,
                     timeout_s: float = 400) -> set[int]:
    """Wait until frames.csv lists ``frames`` finished frames; returns the children pids
    seen while running."""
    t0, kids = time.monotonic(), set()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, proc.communicate()
        kids |= _children(proc.pid)
        csv = out / "timeseries" / "frames.csv"
        if csv.is_file() and len(pd.read_csv(csv)) >= frames:
            return kids | _children(proc.pid)
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no finished frames after {timeout_s} s")


def _check_finished_frames(out: Path) -> pd.DataFrame:
    """Every frame listed in frames.csv has its rows in every table (read_table of the
    streams): the same numbers as frames.csv, one voltage row per bus and one loading row
    per branch of elements.parquet (real values), the bids the frame counted, one unit row
    per unit of the fleet, set-points adding up to the delivered power."""
    from scenarios.results import read_table

    csv = pd.read_csv(out / "timeseries" / "frames.csv")
    listed = csv["frame"].tolist()
    assert listed and listed == list(range(len(listed)))
    tables = {t: read_table(out, t) for t in TABLES}
    frames = tables["frames"].sort_values("frame")
    got = frames["frame"].tolist()
    # the frames stream may hold one write more (written just before the CSV's rows)
    assert got[:len(listed)] == listed and len(got) - len(listed) <= FLUSH_FRAMES
    frames = frames[frames["frame"].isin(listed)]
    for col in ("request_mw", "delivered_mw", "vm_mae_pu", "loading_mae_percent"):
        np.testing.assert_allclose(frames[col].to_numpy(float), csv[col].to_numpy(float),
                                   rtol=1e-12)
    elements = read_table(out, "elements")
    for t, kind, col in (("voltages", elements["kind"] == "bus", "vm_pu"),
                         ("loadings", elements["kind"] != "bus", "loading_percent")):
        df = tables[t]
        df = df[df["frame"].isin(listed)]
        ids = elements.loc[kind, "element_id"].to_numpy()
        for k in listed:
            rows = df[df["frame"] == k]
            assert np.array_equal(rows["element_id"].to_numpy(), ids), (t, k)
            assert np.isfinite(rows[col].to_numpy(float)).mean() > 0.99, (t, k)
    vm = tables["voltages"]["vm_pu"].dropna().to_numpy(float)
    assert 0.9 < vm.min() and vm.max() < 1.1
    bids = tables["bids"]
    assert (bids.groupby("frame").size().reindex(listed, fill_value=0).to_numpy()
            == frames["n_offers"].to_numpy(int)).all()
    units = tables["units"]
    n_units = units[units["frame"] == 0]["unit_id"].nunique()
    assert n_units > 100
    per_frame = units.groupby("frame")
    assert (per_frame.size().reindex(listed, fill_value=0) == n_units).all()
    np.testing.assert_allclose(per_frame["applied_mw"].sum().reindex(listed).to_numpy(),
                               frames["delivered_mw"].to_numpy(float), atol=1e-6)
    # a part of the unit table: the same rows as the whole, read batch by batch
    part = read_table(out, "units", columns=["unit_id", "applied_mw", "frame"],
                      frames=listed[1:3] + [10**6])
    whole = units[units["frame"].isin(listed[1:3])][["unit_id", "applied_mw", "frame"]]
    pd.testing.assert_frame_equal(part, whole.reset_index(drop=True))
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
    assert (out / "timeseries" / "units.arrows").is_file()
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
    _check_finished_frames(out)
