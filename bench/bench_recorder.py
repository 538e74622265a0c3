"""Recording cost: the Recorder per frame, and a year's unit table in bounded memory.

``python -m bench.bench_recorder [--frames N] [--year] [--year-frames N]``

* per frame: feeds N synthetic frames with the shapes of the default run (509 buses, 508
  branches, 530 units with their state, ~1000 bids, the all-active state in every frame) to
  :class:`scenarios.results.Recorder`, once writing every frame at once (``flush_frames=1``,
  what the Recorder did before it buffered) and once with the default buffering
  (:data:`~scenarios.results.FLUSH_FRAMES` frames or :data:`~scenarios.results.FLUSH_S`
  seconds per write), on the same inputs (built before the timing), next to one AC power
  flow of the grid measured in the same run. Wall and CPU time per frame
  (``Recorder.write_time_s``: building the batches, compressing and writing them, the CSV
  rows) and the conversion to Parquet at the end.
* ``--year``: a synthetic unit table of a calendar year (35,040 frames x 1,068 units, 37.4
  million rows, values drawn at random, NaN state where a unit has no such key) written as
  the Recorder writes it (compressed batches of FLUSH_FRAMES frames), then, each step in a
  fresh process whose peak RSS (``VmHWM``, :func:`_peak_rss_mb`) is reported: the conversion to
  Parquet (what ``finalize`` does), and ``read_table`` of one month (2,976 frames, three
  columns) from the streams of a "killed" run and from the Parquet file. A process that
  only imports the same modules gives the baseline RSS.

Writes ``results/benchmarks/recorder.json`` and prints it. Timings on a loaded machine are
noisy; compare the ratios of one run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path("results") / "benchmarks" / "recorder.json"
YEAR_FRAMES, YEAR_UNITS, MONTH_FRAMES = 35_040, 1_068, 2_976
STATE_KEYS = ("backlog_kwh", "curtailed_mwh", "plugged", "remaining_kwh", "soc", "t_in_c")


def _inputs(rng, units: list[str], elements) -> dict:
    """One frame's Recorder inputs with the default run's shapes (random numbers)."""
    buses = elements[elements["kind"] == "bus"]["pp_index"].tolist()
    branches = elements[elements["kind"] != "bus"][["kind", "pp_index"]].to_numpy().tolist()
    vm = {str(b): float(x) for b, x in zip(buses, rng.uniform(0.97, 1.04, len(buses)))}
    ld = {f"{e}:{i}": float(x) for (e, i), x in zip(branches, rng.uniform(-90, 90,
                                                                         len(branches)))}
    offers = [{"bid_id": f"b{j:016x}", "volume_mw": float(v), "price_eur_per_mwh": 50.0}
              for j, v in enumerate(rng.uniform(-0.01, 0.01, 2 * len(units)))]
    m = len(units)
    state = {key: rng.uniform(0, 1, m).tolist() for key in STATE_KEYS}
    record = {"unit_id": units, "building": units, "class": ["battery"] * m,
              **{c: rng.normal(0, 1e-3, m).tolist() for c in (
                  "baseline_mw", "offered_up_mw", "offered_down_mw", "requested_mw",
                  "applied_mw", "p_mw", "profile_mw")},
              "clipped": [False] * m, "clip_reason": [""] * m, "flagged": [False] * m,
              "state": state}
    clearing = {"status": "optimal", "dispatched": True, "request_mw": 1.8,
                "delivered_mw": 1.8, "cost_eur_per_h": 140.0,
                "activation_mw": {o["bid_id"]: 0.001 for o in offers[:100]}}
    report = {"all_active": {"Vm[pu]": vm, "loading[%]": ld}}
    return {"Recorder": {a: {"src": x} for a, x in {
        "clearing": clearing, "report": report, "offers": offers,
        "accuracy": {"vm_mae_pu": 1e-9, "ac_converged": True}, "Vm[pu]": vm,
        "loading[%]": ld, "P_slack[MW]": 0.5,
        "setpoint[MW]": clearing["activation_mw"], "units": record}.items()}}


def _power_flow_ms(repeat: int = 20) -> float:
    """Reference measured in the same run: one warm-started AC power flow of the Bergwald
    grid as GridSim runs it every frame (median ms)."""
    import statistics

    from flexcore.grid.district_grid import district_net
    from flexcore.grid.powerflow import PowerFlowSession

    net = district_net("bergwald")[0]
    session = PowerFlowSession(net)
    session.run()
    times = []
    for _ in range(repeat):
        net.load["p_mw"] *= 1.001
        session.changed()
        t0 = time.perf_counter()
        session.run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _record(clock, inputs: list[dict], **params) -> dict:
    """Feed the frames to a Recorder in a temporary run folder: per-frame figures."""
    from scenarios.results import Recorder

    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder()
        rec.init("Rec")
        rec.create(1, "Recorder", run_dir=tmp, clock=clock.to_dict(), grid="bergwald",
                   **params)
        cpu0 = time.process_time()
        for k, x in enumerate(inputs):
            rec.step(clock.time_of(k), x, None)
        rec._write_out()   # the last buffered frames, counted as recording
        cpu = time.process_time() - cpu0
        t0 = time.perf_counter()
        rec.finalize()
        t_final = time.perf_counter() - t0
        ts = Path(tmp) / "timeseries"
        sizes = {p.name: p.stat().st_size for p in ts.glob("*.parquet")}
    n = rec.n_recorded
    return {"frames": n, "record_ms_per_frame": 1e3 * rec.write_time_s / n,
            "record_cpu_ms_per_frame": 1e3 * cpu / n, "finalize_s": t_final,
            "parquet_bytes": sum(sizes.values())}


def per_frame(frames: int = 96) -> dict:
    from flexcore.district.clock import FrameClock
    from scenarios.results import FLUSH_FRAMES, FLUSH_S, element_table

    elements = element_table("bergwald")
    clock = FrameClock.for_day_types(["winter_workday"], range(min(frames, 96)))
    rng = np.random.default_rng(1)
    units = [f"U{j:04d}" for j in range(530)]
    inputs = [_inputs(rng, units, elements) for _ in range(len(clock))]
    every = _record(clock, inputs, flush_frames=1)
    buffered = _record(clock, inputs)
    pf_ms = _power_flow_ms()
    return {"every_frame": every, "buffered": buffered, "flush_frames": FLUSH_FRAMES,
            "flush_s": FLUSH_S, "power_flow_ms": pf_ms,
            "buffered_record_per_power_flow": buffered["record_ms_per_frame"] / pf_ms,
            "every_frame_over_buffered": every["record_ms_per_frame"]
            / buffered["record_ms_per_frame"]}


# --------------------------------------------------------------------------- a year
def _write_year(run_dir: Path, frames: int, units: int) -> dict:
    """A killed run's unit table of ``frames`` x ``units`` (streams as the Recorder writes
    them: compressed batches of FLUSH_FRAMES frames; a frames stream with the frames)."""
    import pyarrow as pa

    from scenarios.results import FLUSH_FRAMES, STREAM_SUFFIX, _schema, _Stream

    ts = run_dir / "timeseries"
    ts.mkdir(parents=True)
    schema = _schema("units", STATE_KEYS)
    stream = _Stream(ts / f"units{STREAM_SUFFIX}", schema)
    fr_schema = _schema("frames", ())
    frames_stream = _Stream(ts / f"frames{STREAM_SUFFIX}", fr_schema)
    rng = np.random.default_rng(7)
    ids = [f"B{j // 2:04d}.{('battery', 'ev', 'heat_pump')[j % 3]}" for j in range(units)]
    fixed = {"unit_id": pa.array(ids), "building": pa.array([i.split(".")[0] for i in ids]),
             "class": pa.array([i.split(".")[1] for i in ids]),
             "clipped": np.zeros(units, bool), "clip_reason": [""] * units,
             "flagged": np.zeros(units, bool)}
    has_key = {k: rng.uniform(size=units) < 0.3 for k in STATE_KEYS}
    t0 = time.perf_counter()
    for start in range(0, frames, FLUSH_FRAMES):
        for n in range(start, min(start + FLUSH_FRAMES, frames)):
            base = rng.normal(0, 1e-3, units)
            applied = np.where(rng.uniform(size=units) < 0.1, rng.normal(0, 1e-3, units), 0)
            cols = {"frame": np.full(units, n), **fixed, "baseline_mw": base,
                    "offered_up_mw": np.abs(base), "offered_down_mw": -np.abs(base),
                    "requested_mw": applied, "applied_mw": applied, "p_mw": base + applied,
                    "profile_mw": base}
            for k in STATE_KEYS:
                cols[f"state_{k}"] = np.where(has_key[k], rng.uniform(0, 1, units), np.nan)
            stream.add(cols)
            frames_stream.add({"frame": [n]} | {c: [None] for c in fr_schema.names
                                                if c != "frame"})
        stream.flush()
        frames_stream.flush()
    stream.close()
    frames_stream.close()
    return {"write_s": time.perf_counter() - t0,
            "stream_bytes": (ts / f"units{STREAM_SUFFIX}").stat().st_size}


def _child(step: str, run_dir: str, frames: int, units: int) -> dict:
    """One step of the year benchmark (in its own process: its peak RSS is its own)."""
    from scenarios import results

    run_dir = Path(run_dir)
    ts = run_dir / "timeseries"
    t0 = time.perf_counter()
    out: dict = {}
    if step == "write":
        out = _write_year(run_dir, frames, units)
    elif step == "convert":
        from scenarios.results import STREAM_SUFFIX, _schema, _stream_to_parquet

        _stream_to_parquet(ts / f"units{STREAM_SUFFIX}", ts / "units.parquet",
                           _schema("units", STATE_KEYS))
        out["parquet_bytes"] = (ts / "units.parquet").stat().st_size
    elif step in ("read_month_stream", "read_month_parquet"):
        parquet = ts / "units.parquet"
        hidden = ts / ".units.parquet.hidden"
        if step == "read_month_stream" and parquet.exists():
            parquet.rename(hidden)   # read the streams, as after a kill
        try:
            df = results.read_table(run_dir, "units", columns=["frame", "unit_id", "p_mw"],
                                    frames=range(frames // 2, frames // 2 + MONTH_FRAMES))
        finally:
            if hidden.exists():
                hidden.rename(parquet)
        out["rows"] = len(df)
        assert len(df) == min(MONTH_FRAMES, frames - frames // 2) * units
    out["s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident set size: ``VmHWM`` of /proc/self/status on Linux
    (``getrusage``'s ``ru_maxrss`` keeps the parent's peak across fork and exec, so a child
    would report the benchmark's own), else ``resource.getrusage``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_child(step: str, run_dir: Path, frames: int, units: int) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_recorder", "--child", step, str(run_dir),
           "--year-frames", str(frames), "--year-units", str(units)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def year(frames: int = YEAR_FRAMES, units: int = YEAR_UNITS) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        out = {"frames": frames, "units": units, "rows": frames * units,
               "baseline": _run_child("baseline", run_dir, frames, units)}
        for step in ("write", "convert", "read_month_stream", "read_month_parquet"):
            out[step] = _run_child(step, run_dir, frames, units)
            print(step, out[step], flush=True)
    return out


def main(frames: int = 96, *, with_year: bool = False, year_frames: int = YEAR_FRAMES,
         year_units: int = YEAR_UNITS) -> dict:
    from flexcore import runs

    out = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": runs.versions()["platform"], "per_frame": per_frame(frames)}
    if with_year:
        out["year_unit_table"] = year(year_frames, year_units)
    elif OUT.is_file():   # keep the last year figures
        last = json.loads(OUT.read_text()).get("year_unit_table")
        if last:
            out["year_unit_table"] = last | {"from_run": "earlier"}
    out["note"] = ("per_frame: Recorder time per frame (batches built, compressed, written; "
                   "CSV rows) writing every frame at once vs buffered, synthetic "
                   "Bergwald-sized frames; year_unit_table: peak RSS of each step in its "
                   "own process (baseline: the imports only)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--year", action="store_true", help="also the year-size unit table")
    ap.add_argument("--year-frames", type=int, default=YEAR_FRAMES)
    ap.add_argument("--year-units", type=int, default=YEAR_UNITS)
    ap.add_argument("--child", nargs=2, metavar=("STEP", "RUN_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], a.child[1], a.year_frames, a.year_units)))
    else:
        main(a.frames, with_year=a.year, year_frames=a.year_frames, year_units=a.year_units)
