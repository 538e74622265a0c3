"""Benchmark: the region DSOs' own time per frame, replayed from a real co-simulation, old
code against new side by side.

``python -m bench.bench_region_dso [--grid ...] [--frames 3] [--start 72] [--day-type
winter_workday] [--areas 0] [--base REF] [--save FILE | --load FILE] [--profile N]``

1. **capture**: one :func:`scenarios.region_cosim.run_region_cosim` (the bids, profiles
   and split of :func:`bench.bench_region_cosim.load_region`; areas 0 = all; starter
   "python", so that every DSO entity lives in this process) records every DSO entity's
   construction (its folder, spec and params) and every message it receives
   (``_Entity.receive``: the meters' base state and measurements, the TSO's lazy and
   dispatched clearings, the MV DSO's sigmas, the LV DSOs' link answers), in order.
   ``--save`` also writes that record (pickle, a development aid); ``--load`` replays such
   a file instead of running the co-simulation.
2. **replay**, one after the other in fresh processes: the DSO code of ``--base`` (a git
   ref, default the commit before the DSO fast path; extracted with ``git archive`` into a
   temporary folder) and the DSO code of this tree. Each builds the entities and feeds them
   the recorded messages in the recorded order, timing every ``receive`` (wall and CPU).
   The entities depend only on their own messages, so both replays do exactly the work
   the co-simulation's DSO processes did.

Printed and written to ``results/benchmarks/region_dso-<UTC>.json``: per frame the DSOs'
time (LV DSOs summed, the MV DSO, both; CPU and wall) old and new side by side and their
ratio, and whether every message the DSOs sent (signed package bytes, checks, sigmas,
links; the entities' own ``time_s`` left out) is **identical** in both replays.
``--profile N``: also a cProfile of the new replay, its N most expensive functions
(cumulative) printed.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT_DIR = Path("results/benchmarks")
REPO = Path(__file__).resolve().parents[1]
#: the last commit of main before the DSO fast path (the "old" side of the comparison)
BASE_REF = "c7e8393"


# --------------------------------------------------------------------------- capture
def capture(a: argparse.Namespace) -> dict[str, Any]:
    """Run the co-simulation of ``a`` in-process and record the DSO entities' inputs."""
    from dataclasses import replace

    import agents.region_dso as rd
    from bench.bench_region_cosim import load_region
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region, _, cfg0, bids_all, inj = load_region(a)
    names = [x.name for x in region.areas][:a.areas or None]
    bids = {x: bids_all[x] for x in names if x in bids_all}
    entities: list[dict[str, Any]] = []
    calls: list[bytes] = []
    index: dict[int, int] = {}
    lv_init, mv_init, receive = rd._LVEntity.__init__, rd._MVEntity.__init__, rd._Entity.receive

    def rec_lv(self, root, spec, max_rounds, coupled, privacy, request_mw, policy=None):
        index[id(self)] = len(entities)
        entities.append({"kind": "LV", "args": (str(Path(root).resolve()), spec, max_rounds,
                                                 coupled, privacy, request_mw, policy)})
        lv_init(self, root, spec, max_rounds, coupled, privacy, request_mw, policy)

    def rec_mv(self, root, spec, max_rounds, privacy, request_mw, policy=None):
        index[id(self)] = len(entities)
        entities.append({"kind": "MV", "args": (str(Path(root).resolve()), spec, max_rounds,
                                                 privacy, request_mw, policy)})
        mv_init(self, root, spec, max_rounds, privacy, request_mw, policy)

    def rec_receive(self, frame, attr, msg, port=None):
        calls.append(pickle.dumps((index[id(self)], frame, attr, msg, port),
                                  protocol=pickle.HIGHEST_PROTOCOL))
        return receive(self, frame, attr, msg, port)

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    rd._LVEntity.__init__, rd._MVEntity.__init__ = rec_lv, rec_mv   # type: ignore[method-assign]
    rd._Entity.receive = rec_receive                                   # type: ignore[method-assign]
    try:
        res = run_region_cosim(replace(cfg0, areas=a.areas),
                               CosimOptions(frames=a.frames, starter="python"),
                               out=Path("results") / f"{stamp}-bench-region-dso",
                               region=region, bids=bids, injections=inj)
    finally:
        rd._LVEntity.__init__, rd._MVEntity.__init__ = lv_init, mv_init  # type: ignore
        rd._Entity.receive = receive                                       # type: ignore
    print(f"co-simulation: {len(bids)} LV DSOs, {a.frames} frames, {len(calls)} DSO "
          f"messages; costs {[round(float(f['cost_eur_per_h']), 3) for f in res.frames]}",
          flush=True)
    return {"entities": entities, "calls": calls, "folder": str(res.folder)}


# --------------------------------------------------------------------------- replay
def _package(text: str) -> tuple[str, str]:
    """A signed package (base64 text) as (its manifest without the creation time, the
    SHA-256 of its arrays' bytes): equal for equal packages made at other times (the
    signature, over the manifest, is left out)."""
    import base64
    import hashlib
    import io
    import json
    import zipfile

    import numpy as np

    h = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(text))) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        with np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False) as z:
            for name in sorted(z.files):   # the arrays' bytes (the npz holds zip times)
                arr = z[name]
                h.update(f"{name} {arr.dtype} {arr.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes())
    for key in ("created_utc", "package_sha256", "arrays_sha256"):   # of the npz's bytes
        manifest.pop(key, None)
    return json.dumps(manifest, sort_keys=True), h.hexdigest()


def _strip(out: dict) -> dict:
    """An entity's output without its own timings (``time_s``) and with its packages as
    :func:`_package`."""
    def clean(v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: (_package(x) if k == "package" and isinstance(x, str) else x)
                for k, x in v.items() if k != "time_s"}

    return {e: {k: clean(v) for k, v in attrs.items()} for e, attrs in out.items()}


def replay(record_file: str, out_file: str, profile: int = 0) -> None:
    """Feed the recorded messages to fresh entities of whatever ``agents.region_dso`` this
    interpreter imports; write the timings and outputs to ``out_file`` (pickle)."""
    from agents import region_dso as rd

    with open(record_file, "rb") as fh:
        record = pickle.load(fh)
    ents: list[Any] = []
    for e in record["entities"]:
        root, *rest = e["args"]
        cls = rd._LVEntity if e["kind"] == "LV" else rd._MVEntity
        ents.append(cls(Path(root), *rest))
    times: dict[tuple[str, int], list[float]] = {}
    outputs: list[str] = []
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    for blob in record["calls"]:
        k, frame, attr, msg, port = pickle.loads(blob)
        ent = ents[k]
        c0, w0 = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        out = ent.receive(frame, attr, msg, port)
        if prof is not None:
            prof.disable()
        c1, w1 = time.process_time(), time.perf_counter()
        t = times.setdefault((record["entities"][k]["kind"], frame), [0.0, 0.0])
        t[0] += c1 - c0
        t[1] += w1 - w0
        outputs.append(repr(_strip(out)))
    if prof is not None:
        import io
        import pstats

        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(profile)
        print(s.getvalue(), flush=True)
    with open(out_file, "wb") as fh:
        pickle.dump({"times": times, "outputs": outputs, "module": rd.__file__}, fh)


def _replay_in(tree: Path, record_file: Path, out_file: Path, profile: int = 0) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(v, "1")   # as the co-simulation's DSO processes
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--replay",
                    str(record_file), str(out_file), "--profile", str(profile)],
                   env=env, cwd=str(tree), check=True)
    with open(out_file, "rb") as fh:
        return pickle.load(fh)


def _checkout(ref: str, into: Path) -> Path:
    tar = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into


def compare(old: dict, new: dict) -> dict[str, Any]:
    frames = sorted({f for _, f in old["times"]} | {f for _, f in new["times"]})
    rows = []
    for f in frames:
        row: dict[str, Any] = {"frame": f}
        for side, r in (("old", old), ("new", new)):
            lv = r["times"].get(("LV", f), [0.0, 0.0])
            mv = r["times"].get(("MV", f), [0.0, 0.0])
            row |= {f"lv_cpu_{side}_s": lv[0], f"mv_cpu_{side}_s": mv[0],
                    f"cpu_{side}_s": lv[0] + mv[0], f"wall_{side}_s": lv[1] + mv[1]}
        row["cpu_ratio_old_over_new"] = (row["cpu_old_s"] / row["cpu_new_s"]
                                         if row["cpu_new_s"] else math.nan)
        rows.append(row)
    same = [a == b for a, b in zip(old["outputs"], new["outputs"])]
    later = rows[1:] or rows
    return {"frames": rows,
            "identical_messages": bool(all(same) and len(old["outputs"]) == len(new["outputs"])),
            "messages": len(new["outputs"]), "differing_messages": int(sum(not s for s in same)),
            "first_difference": next((k for k, s in enumerate(same) if not s), None),
            "later_frames_cpu_old_s": sum(r["cpu_old_s"] for r in later) / len(later),
            "later_frames_cpu_new_s": sum(r["cpu_new_s"] for r in later) / len(later),
            "old_module": old["module"], "new_module": new["module"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.bench_region_cosim import add_region_args
    from flexcore.runs import write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--areas", type=int, default=0, help="the first N LV areas (0: all)")
    p.add_argument("--base", default=BASE_REF, help="git ref of the old DSO code")
    p.add_argument("--save", help="also write the recorded messages to this file")
    p.add_argument("--load", help="replay this record instead of running the co-simulation")
    p.add_argument("--keep", help="also keep both replays' outputs (pickles) in this folder")
    p.add_argument("--profile", type=int, default=0,
                   help="print the N most expensive functions of the new replay")
    a = p.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if a.load:
            record_file = Path(a.load)
            folder = None
        else:
            rec = capture(a)
            folder = rec.pop("folder")
            record_file = Path(a.save) if a.save else t / "record.pkl"
            with open(record_file, "wb") as fh:
                pickle.dump(rec, fh)
        (t / "old").mkdir()
        old_tree = _checkout(a.base, t / "old")
        old = _replay_in(old_tree, record_file, t / "old.pkl")
        new = _replay_in(REPO, record_file, t / "new.pkl", a.profile)
        if a.keep:
            Path(a.keep).mkdir(parents=True, exist_ok=True)
            for side in ("old", "new"):
                (Path(a.keep) / f"{side}.pkl").write_bytes((t / f"{side}.pkl").read_bytes())
    res = compare(old, new)
    print(f"{'frame':>5} {'old CPU s':>10} {'new CPU s':>10} {'old/new':>8}   "
          f"(LV old/new, MV old/new; wall old/new)")
    for r in res["frames"]:
        print(f"{r['frame']:5d} {r['cpu_old_s']:10.2f} {r['cpu_new_s']:10.2f} "
              f"{r['cpu_ratio_old_over_new']:8.2f}   ({r['lv_cpu_old_s']:.2f}/"
              f"{r['lv_cpu_new_s']:.2f}, {r['mv_cpu_old_s']:.2f}/{r['mv_cpu_new_s']:.2f}; "
              f"{r['wall_old_s']:.2f}/{r['wall_new_s']:.2f})")
    print(f"messages identical: {res['identical_messages']} ({res['messages']} messages, "
          f"{res['differing_messages']} differ)")
    res |= {"base": a.base, "record": str(record_file) if a.load or a.save else None,
            "cosim_folder": folder, "areas": a.areas, "grid": a.grid, "start": a.start,
            "day_type": a.day_type, "load_avg": os.getloadavg()[0]}
    path = OUT_DIR / f"region_dso-{stamp}.json"
    write_json(path, res)
    print(f"written: {path}")
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        replay(sys.argv[2], sys.argv[3], int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        main()
