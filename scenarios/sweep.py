"""``flexcosim sweep SWEEP.toml``: many runs of one base scenario, on Dask.

A sweep file names a base scenario and the scenario keys to vary::

    [sweep]
    name = "pv-and-seed"                 # part of the sweep folder's name
    base = "bergwald.toml"               # a scenario TOML (relative to this file)
    mode = "product"                     # "product" (every combination) or "zip"

    [vary]                               # "<table>.<key>" (dotted below [dso]) = values
    "scenario.seed" = [1, 2]
    "scenario.pv_penetration" = [0.4, 0.8]

Every point is the base scenario with its values set, validated like any scenario when the
sweep file is read (a bad key or value: one line naming it, exit 2), and runs as an
ordinary run folder ``<sweep folder>/points/<point id>/``. The point id is the first 16 hex
digits of SHA-256 over the resolved scenario (``config.resolved.toml``'s document) and the
code version (flexcosim's version and git commit), never over paths: ``--resume`` runs only
the points without a finished folder (an unfinished or failed one is moved to
``attempts/`` first, never overwritten). ``summary.parquet`` has one row per point (its
parameters, ``status``, ``error``, the run's ``summary.csv`` figures) and
``comparison.png`` plots the main figures side by side.

Executors: Dask distributed. ``workers`` N starts a ``LocalCluster`` of N processes with one
thread each (BLAS limited to one thread, glibc's default heap: ``WORKER_CONFIG``);
``scheduler`` joins a running cluster. Workers
write the run folders themselves at the sweep folder's path: remote workers must see the
same path (a shared file system); the client checks every finished point's folder and
records a point whose folder it cannot read as failed. ``workers = 0`` runs the points one
after another in this process (no Dask; for debugging).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scenarios.config import _KEYS, _TOP, ConfigError, ScenarioConfig, parse_config, read_toml

SWEEP_FORMAT = 1
MODES = ("product", "zip")
STATUS_DONE, STATUS_FAILED = "done", "failed"
#: the run summary figures plotted side by side in ``comparison.png``
PLOTTED = ("cost_eur", "delivered_up_mwh", "delivered_down_mwh", "vm_mae_pu_max",
           "loading_mae_percent_max", "wall_time_s")


class SweepError(ConfigError):
    """A malformed sweep file or sweep folder; the message names the key."""


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One point: its values (sweep key -> value), its scenario and its id."""

    params: dict[str, Any]
    doc: dict[str, Any]            # the scenario TOML document with the values set
    cfg: ScenarioConfig
    point_id: str


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    base: Path
    mode: str
    vary: dict[str, list]
    points: tuple[SweepPoint, ...]
    source: str


# --------------------------------------------------------------------------- parsing
def _set(doc: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in _TOP or parts[0] in ("fpu", "test"):
        raise SweepError(f"{where} {key!r}: expected '<table>.<key>' with a table of "
                         f"{sorted(_TOP - {'fpu', 'test'})}")
    table, name = parts[0], parts[1]
    if name not in _KEYS[table] or (len(parts) > 2 and (table, name) != ("dso", "limits")):
        raise SweepError(f"{where} {key!r}: unknown key {name!r} of [{table}]; allowed: "
                         f"{sorted(_KEYS[table])}")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SweepError(f"{where} {key!r}: {p!r} is not a table in the base scenario")
    node[parts[-1]] = value


def code_version() -> str:
    """flexcosim's version and the git commit of its source (``unknown`` outside git)."""
    from importlib import metadata

    try:
        version = metadata.version("flexcosim")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit or 'unknown'}"


def point_id(cfg: ScenarioConfig, version: str) -> str:
    """16 hex digits of SHA-256 over the resolved scenario and the code version."""
    from scenarios.runner import scenario_document

    text = json.dumps({"scenario": scenario_document(cfg), "code": version}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_sweep(doc: dict, *, source: str = "<dict>", base_dir: Path | None = None,
                version: str | None = None) -> Sweep:
    """Validate a sweep document and resolve its points (each a validated scenario)."""
    base_dir = base_dir or Path.cwd()
    unknown = sorted(set(doc) - {"sweep", "vary"})
    if unknown:
        raise SweepError(f"unknown table(s) {unknown}; allowed: ['sweep', 'vary']")
    sw = doc.get("sweep")
    if not isinstance(sw, dict):
        raise SweepError("missing table [sweep]")
    bad = sorted(set(sw) - {"name", "base", "mode"})
    if bad:
        raise SweepError(f"[sweep] unknown key(s) {bad}; allowed: ['base', 'mode', 'name']")
    name = sw.get("name", "sweep")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SweepError(f"[sweep] name: expected letters, digits, '-' or '_', got {name!r}")
    if not isinstance(sw.get("base"), str):
        raise SweepError("[sweep] base: expected the path of a scenario TOML")
    base = Path(sw["base"])
    base = (base if base.is_absolute() else base_dir / base).resolve()
    if not base.is_file():
        raise SweepError(f"[sweep] base: scenario file not found: {base}")
    mode = sw.get("mode", "product")
    if mode not in MODES:
        raise SweepError(f"[sweep] mode: expected one of {list(MODES)}, got {mode!r}")
    vary = doc.get("vary")
    if not isinstance(vary, dict) or not vary:
        raise SweepError("[vary]: expected a table of '<table>.<key>' = [values]")
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"[vary] {key!r}: expected a non-empty list of values")
        _set({}, key, None, "[vary]")  # the key is known
    lengths = {k: len(v) for k, v in vary.items()}
    if mode == "zip" and len(set(lengths.values())) > 1:
        raise SweepError(f"[vary]: mode 'zip' needs lists of one length, got {lengths}")
    try:
        base_doc = tomllib.loads(base.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SweepError(f"[sweep] base {base}: not a readable TOML file ({exc})") from None
    keys = list(vary)
    combos = (itertools.product(*vary.values()) if mode == "product"
              else zip(*vary.values(), strict=True))
    version = code_version() if version is None else version
    points, seen = [], {}
    for k, values in enumerate(combos):
        params = dict(zip(keys, values, strict=True))
        pdoc = copy.deepcopy(base_doc)
        for key, value in params.items():
            _set(pdoc, key, value, "[vary]")
        try:
            cfg = parse_config(pdoc, source=str(base), base_dir=base.parent)
        except ConfigError as exc:
            raise SweepError(f"[vary] point #{k + 1} {_short(params)}: {exc}") from None
        pid = point_id(cfg, version)
        if pid in seen:
            raise SweepError(f"[vary] point #{k + 1} {_short(params)} is the same scenario "
                             f"as point #{seen[pid] + 1}")
        seen[pid] = k
        points.append(SweepPoint(params, pdoc, cfg, pid))
    return Sweep(name, base, mode, dict(vary), tuple(points), source)


def _short(params: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return text if len(text) <= 80 else text[:77] + "..."


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep TOML file (errors start with the file's name)."""
    path = Path(path)
    try:
        doc = read_toml(path, what="sweep file")
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    try:
        return parse_sweep(doc, source=str(path), base_dir=path.parent)
    except ConfigError as exc:
        raise SweepError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- one point
def run_point(doc: dict, base: str, out: str) -> dict:
    """Run one point into the run folder ``out`` (in a worker); never raises: a failure is
    returned as ``{"status": "failed", "error": <one line>}``."""
    from flexcore.runs import limit_blas_threads

    limit_blas_threads()
    restore_malloc()
    t0 = time.perf_counter()
    try:
        _quiet_logs()
        from scenarios.runner import run_scenario

        cfg = parse_config(doc, source=base, base_dir=Path(base).parent)
        run_scenario(cfg, out=out, quiet=True)
    except Exception as exc:  # recorded as the point's status; the sweep goes on
        return {"status": STATUS_FAILED, "error": _one_line(exc),
                "wall_s": time.perf_counter() - t0}
    return {"status": STATUS_DONE, "error": "", "wall_s": time.perf_counter() - t0}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:300]}"


def _quiet_logs() -> None:
    import logging

    logging.getLogger("mosaik").setLevel(logging.WARNING)
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()


# --------------------------------------------------------------------------- folder
def _record_path(sweep_dir: Path, pid: str) -> Path:
    return sweep_dir / "points" / pid / "point.json"


def finished(sweep_dir: Path, pid: str) -> bool:
    """A point whose run folder holds ``point.json`` with status done and ``summary.csv``."""
    rec = _record_path(sweep_dir, pid)
    if not rec.is_file() or not (rec.parent / "summary.csv").is_file():
        return False
    try:
        return json.loads(rec.read_text()).get("status") == STATUS_DONE
    except (ValueError, OSError):
        return False


def _set_aside(sweep_dir: Path, pid: str) -> None:
    """Move an unfinished or failed point folder to ``attempts/<id>-<k>`` (kept)."""
    folder = sweep_dir / "points" / pid
    if not folder.exists():
        return
    (sweep_dir / "attempts").mkdir(exist_ok=True)
    for k in itertools.count(1):
        dest = sweep_dir / "attempts" / f"{pid}-{k}"
        if not dest.exists():
            folder.rename(dest)
            return


def _write_record(sweep_dir: Path, point: SweepPoint, result: dict) -> dict:
    from flexcore.runs import write_json

    folder = sweep_dir / "points" / point.point_id
    if result["status"] == STATUS_DONE and not (folder / "summary.csv").is_file():
        result = {**result, "status": STATUS_FAILED,
                  "error": f"run folder {folder} not readable by the client: workers must "
                           "write to a file system the client shares"}
    record = {"point": point.point_id, "params": point.params, **result}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "point.json", record)
    return record


# --------------------------------------------------------------------------- executors
#: Dask settings of the local workers: no statistical profiler (it samples the task's stack
#: every 10 ms) and no GIL monitor (every 1 ms); measured on one Bergwald day in a worker,
#: 23.6 s CPU with them vs 18.8 s without (17.9 s in this process). And glibc's own heap
#: policy: Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
#: (``distributed.nanny.pre-spawn-environ``), which also freezes glibc's mmap threshold at
#: 128 kB, so every larger array of a frame is mapped, zeroed by the kernel and unmapped
#: again: three Bergwald days in this process took 2.24 M minor page faults and 10.0 s system
#: CPU with it against 0.16 M and 2.6 s without (README "Calendar runs").
#: The event loops' tick (every 20 ms, to warn of a blocked loop; each wakes the process and
#: takes the GIL from the running task), the memory monitors (every 100 ms) and the system
#: monitor (every 500 ms) run less often: two idle workers and their scheduler cost 9.7 % of
#: a core with only the settings above, 14-15 % with all of Dask's defaults, 1.6-1.9 % with
#: these (``python -m bench.bench_sweep --idle 30``).
WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                 "distributed.admin.system-monitor.gil.enabled": False,
                 "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.admin.tick.interval": "1s",
                 "distributed.worker.memory.monitor-interval": "1s",
                 "distributed.admin.system-monitor.interval": "5s"}
#: glibc ``mallopt`` parameters (malloc.h) and the values of its dynamic thresholds' limits
#: on 64-bit Linux (DEFAULT_MMAP_THRESHOLD_MAX, and twice that for trimming)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20


def restore_malloc() -> bool:
    """In a process started with ``MALLOC_TRIM_THRESHOLD_`` (e.g. a Dask worker of a
    ``--scheduler`` cluster, whose nanny sets it; see ``WORKER_CONFIG``), set glibc's mmap
    and trim thresholds to the limits its dynamic thresholds reach in a plain process, so a
    run's temporary arrays reuse the heap instead of being mapped anew every frame. Returns
    whether it did (only on glibc, only with the variable set)."""
    import ctypes
    import os

    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                    and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
    except (OSError, AttributeError):   # not glibc
        return False


def _local_cluster(workers: int, *, config: dict | None = None):
    """A LocalCluster of ``workers`` processes with one thread each and its client, with
    ``config`` (default :data:`WORKER_CONFIG`; ``{}``: Dask's own defaults, for benchmarks)."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    from flexcore.runs import BLAS_THREAD_VARS

    # silence_logs: Dask's own warnings (e.g. a worker killed at close after its run) stay
    # out of the command's output; errors are still shown. The nannies hand the config on.
    with dask.config.set(WORKER_CONFIG if config is None else config):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", env={v: "1" for v in BLAS_THREAD_VARS},
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_sweep(sweep: Sweep, *, sweep_dir: Path, workers: int = 1,
              scheduler: str | None = None, quiet: bool = True,
              client: Any = None) -> list[dict]:
    """Run the points of ``sweep`` not finished in ``sweep_dir``; write ``summary.parquet``
    and ``comparison.png``; returns one record per point (finished ones read back)."""
    from tqdm import tqdm

    sweep_dir = Path(sweep_dir).resolve()
    (sweep_dir / "points").mkdir(parents=True, exist_ok=True)
    todo = [p for p in sweep.points if not finished(sweep_dir, p.point_id)]
    for p in todo:
        _set_aside(sweep_dir, p.point_id)
    bar = tqdm(total=len(sweep.points), initial=len(sweep.points) - len(todo), unit="point",
               desc=f"sweep {sweep.name}", disable=quiet)

    def done(point: SweepPoint, result: dict) -> None:
        rec = _write_record(sweep_dir, point, result)
        bar.update(1)
        if rec["status"] != STATUS_DONE:
            bar.write(f"point {point.point_id} {_short(point.params)} failed: {rec['error']}")

    def args(p: SweepPoint) -> tuple:
        return p.doc, str(sweep.base), str(sweep_dir / "points" / p.point_id)

    try:
        run_tasks(todo, args, done, key=lambda p: f"point-{p.point_id}", workers=workers,
                  scheduler=scheduler, client=client)
    finally:
        bar.close()
    records = [_read_record(sweep_dir, p) for p in sweep.points]
    write_summary(sweep_dir, records, list(sweep.vary))
    return records


def run_tasks(items: list, args: Callable, done: Callable, *, key: Callable, workers: int,
              scheduler: str | None = None, client: Any = None) -> None:
    """The executor of sweeps and chunked calendar runs (scenarios.chunks): ``run_point(
    *args(item))`` for every item, ``done(item, result)`` as each one finishes (a task
    that could not run at all counts as failed). ``workers = 0`` without a scheduler or
    client: one after another in this process; else on Dask (a LocalCluster of ``workers``
    processes, ``scheduler``, or ``client``), under the task names ``key(item)``."""
    if items and workers == 0 and scheduler is None and client is None:
        for item in items:
            done(item, run_point(*args(item)))
    elif items:
        _run_dask(items, args, done, key=key, workers=workers, scheduler=scheduler,
                  client=client)


def _run_dask(todo: list, args: Callable, done: Callable, *, key: Callable, workers: int,
              scheduler: str | None, client: Any) -> None:
    from distributed import Client, as_completed

    own, cluster = None, None
    if client is None:
        if scheduler:
            own = client = Client(scheduler)
        else:
            own, cluster = _local_cluster(max(1, workers))
            client = own
    try:
        futures = {client.submit(run_point, *args(p), key=key(p), pure=False): p for p in todo}
        for fut in as_completed(futures):
            point = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:  # a worker died or the task could not run
                result = {"status": STATUS_FAILED, "error": _one_line(exc), "wall_s": math.nan}
            done(point, result)
    finally:
        if own is not None:
            own.close()
        if cluster is not None:
            cluster.close()


def _read_record(sweep_dir: Path, point: SweepPoint) -> dict:
    import pandas as pd

    folder = sweep_dir / "points" / point.point_id
    try:
        rec = json.loads((folder / "point.json").read_text())
    except (OSError, ValueError):
        rec = {"status": STATUS_FAILED, "error": "no record (not run)", "wall_s": math.nan}
    row = {"point": point.point_id, "status": rec.get("status", STATUS_FAILED),
           "error": rec.get("error", ""), "point_wall_s": rec.get("wall_s", math.nan),
           "run_dir": f"points/{point.point_id}"}
    row |= {k: _cell(v) for k, v in point.params.items()}
    if row["status"] == STATUS_DONE:
        summary = pd.read_csv(folder / "summary.csv").to_dict("records")[0]
        row |= {k: v for k, v in summary.items() if k not in row}
    return row


def _cell(value: Any) -> Any:
    """A parameter value as a Parquet cell: scalars as they are, others as JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def write_summary(sweep_dir: Path, records: list[dict], keys: list[str]) -> Path:
    """``summary.parquet`` (one row per point) and ``comparison.png``."""
    import pandas as pd

    table = pd.DataFrame(records)
    path = sweep_dir / "summary.parquet"
    table.to_parquet(path, index=False)
    _plot(table, keys, sweep_dir / "comparison.png")
    return path


def _plot(table, keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PLOTTED if m in table.columns]
    if not metrics:
        return
    labels = [", ".join(f"{k.split('.')[-1]}={row[k]}" for k in keys)
              for _, row in table.iterrows()]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 0.6 * len(table) + 3), 2.0
                                                       * len(metrics)), sharex=True)
    axes = [axes] if len(metrics) == 1 else list(axes)
    ok = (table["status"] == STATUS_DONE).to_numpy()
    for ax, m in zip(axes, metrics, strict=True):
        ax.bar(range(len(table)), table[m].astype(float).fillna(0.0),
               color=["tab:blue" if x else "tab:red" for x in ok])
        ax.set_ylabel(m, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(table)), labels, rotation=30, ha="right", fontsize=7)
    axes[0].set_title("sweep: run summary per point (red: failed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def _stored_sweep_file(sweep: Sweep, sweep_dir: Path) -> None:
    """``sweep.toml`` in the sweep folder: the sweep file with ``base`` made absolute (what
    ``--resume`` reads), and ``sweep.json``: the points and their ids."""
    from flexcore.runs import write_json, write_toml

    write_toml(sweep_dir / "sweep.toml",
               {"sweep": {"name": sweep.name, "base": str(sweep.base), "mode": sweep.mode},
                "vary": sweep.vary},
               header=f"flexcosim sweep (from {sweep.source}); flexcosim sweep --resume "
                      "reads this file")
    write_json(sweep_dir / "sweep.json",
               {"format": SWEEP_FORMAT, "name": sweep.name, "base": str(sweep.base),
                "mode": sweep.mode, "code_version": code_version(),
                "points": [{"point": p.point_id, "params": p.params} for p in sweep.points]})


def sweep_cli(args) -> int:
    """``flexcosim sweep``: 0 when every point finished, 1 when a point failed."""
    from flexcore.runs import new_run_dir

    if args.resume:
        sweep_dir = Path(args.resume)
        if not (sweep_dir / "sweep.toml").is_file():
            raise SweepError(f"--resume {sweep_dir}: not a sweep folder (no sweep.toml)")
        sweep = load_sweep(args.sweep or sweep_dir / "sweep.toml")
    elif args.sweep:
        sweep = load_sweep(args.sweep)
    else:
        raise SweepError("give a SWEEP.toml or --resume SWEEP_DIR")
    if args.workers < 0:
        raise SweepError(f"--workers: must be >= 0, got {args.workers}")
    if args.check:
        print(f"ok: {sweep.source}: {len(sweep.points)} point(s) of {sweep.base.name} "
              f"({sweep.mode} over {', '.join(sweep.vary)})")
        return 0
    if not args.resume:
        sweep_dir = new_run_dir(f"sweep-{sweep.name}", out=args.out)
    _stored_sweep_file(sweep, sweep_dir)
    records = run_sweep(sweep, sweep_dir=sweep_dir, workers=args.workers,
                        scheduler=args.scheduler, quiet=args.quiet)
    failed = [r for r in records if r["status"] != STATUS_DONE]
    print(f"sweep {sweep.name}: {len(records) - len(failed)} of {len(records)} point(s) done"
          + (f", {len(failed)} failed (see summary.parquet: status, error)" if failed else ""))
    print(f"sweep folder: {sweep_dir.resolve()}")
    return 1 if failed else 0


__all__ = ["Sweep", "SweepError", "SweepPoint", "load_sweep", "parse_sweep", "run_sweep",
           "sweep_cli", "code_version", "point_id", "finished", "run_point", "run_tasks",
           "restore_malloc"]
