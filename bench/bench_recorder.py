"""Recording overhead per frame: the Recorder's crash-safe Arrow streams on Bergwald-sized
frames (every bus and branch, every unit with its state, every bid), without the rest of
the co-simulation.

``python -m bench.bench_recorder [--frames N]``: feeds N synthetic frames with the shapes of
the default run (509 buses, 508 branches, ~530 units, ~1000 bids, predictions and the
all-active state in every frame) to :class:`scenarios.results.Recorder` and times its
per-frame work (``Recorder.write_time_s``: building the batches, writing them to the OS,
the CSV rows) and the conversion to Parquet at the end, next to one AC power flow of the
same grid measured in the same run (the ratio is the figure to compare). Writes
``results/benchmarks/recorder.json`` and prints it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path("results") / "benchmarks" / "recorder.json"


def _inputs(clock, rng, units: list[str], elements) -> dict:
    """One frame's Recorder inputs with the default run's shapes (random numbers)."""
    buses = elements[elements["kind"] == "bus"]["pp_index"].tolist()
    branches = elements[elements["kind"] != "bus"][["kind", "pp_index"]].to_numpy().tolist()
    vm = {str(b): float(x) for b, x in zip(buses, rng.uniform(0.97, 1.04, len(buses)))}
    ld = {f"{e}:{i}": float(x) for (e, i), x in zip(branches, rng.uniform(-90, 90,
                                                                         len(branches)))}
    offers = [{"bid_id": f"b{j:016x}", "volume_mw": float(v), "price_eur_per_mwh": 50.0}
              for j, v in enumerate(rng.uniform(-0.01, 0.01, 2 * len(units)))]
    m = len(units)
    state = {key: rng.uniform(0, 1, m).tolist() for key in
             ("backlog_kwh", "curtailed_mwh", "plugged", "remaining_kwh", "soc", "t_in_c")}
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


def main(frames: int = 96) -> dict:
    from flexcore.district.clock import FrameClock
    from scenarios.results import Recorder, element_table

    elements = element_table("bergwald")
    clock = FrameClock.for_day_types(["winter_workday"], range(96))
    rng = np.random.default_rng(1)
    units = [f"U{j:04d}" for j in range(530)]
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder()
        rec.init("Rec")
        rec.create(1, "Recorder", run_dir=tmp, clock=clock.to_dict(), grid="bergwald")
        for k in range(min(frames, len(clock))):
            inputs = _inputs(clock, rng, units, elements)
            rec.step(clock.time_of(k), inputs, None)
        t0 = time.perf_counter()
        rec.finalize()
        t_final = time.perf_counter() - t0
        sizes = {p.name: p.stat().st_size for p in (Path(tmp) / "timeseries").glob("*.parquet")}
    n = rec.n_recorded
    pf_ms = _power_flow_ms()
    out = {"frames": n, "record_ms_per_frame": 1e3 * rec.write_time_s / n,
           "power_flow_ms": pf_ms, "record_per_power_flow": rec.write_time_s / n / pf_ms * 1e3,
           "finalize_s": t_final, "finalize_ms_per_frame": 1e3 * t_final / n,
           "parquet_bytes": sizes,
           "note": "Recorder._flush per frame (batches to the OS, CSV rows), synthetic "
                   "Bergwald-sized frames; finalize converts the streams to Parquet"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    main(ap.parse_args().frames)
