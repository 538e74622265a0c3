"""``flexcosim region SCENARIO.toml --cosim``: the region study of :mod:`scenarios.region`
as a mosaik co-simulation over frames, with the DSOs as agents in their own processes.

::

    +----------------------------- world.group() -----------------------------------------+
    | RegionGrid.Meter[a] --measured--> RegionDSO.LV[a] / .MV --to_tso--> RegionTSO.Desk[a] |
    |        ^                               ^                                 |             |
    |        | setpoint[MW] (weak)           +------ to_dso (weak) ------------+             |
    | RegionGrid.Region <-------------------------- RegionTSO.TSO                            |
    |                                                                                        |
    | privacy "exact" only (DSO to DSO, never through the TSO):                              |
    | RegionDSO.Port[a] (the MV DSO's mailbox of area a) --to_lv/from_mv--> RegionDSO.LV[a]  |
    | RegionDSO.LV[a] --to_mv/from_lv (weak)--> RegionDSO.Port[a]                            |
    +----------------------------------------------------------------------------------------+
    RegionTSO.TSO --clearing--> Collector <--ac-- RegionGrid.Region;  RegionDSO --report-->

Tiers of one clearing round at ``privacy = "exact"`` (mosaik's same-time loop, one frame
time; ``agents.region_dso`` and ``agents.region_tso`` hold the message contents)::

    tier t    TSO clears (lazy clearing j) -> to_dso {lazy j} (weak)
    tier t+1  MV: check own sides, sigma_a -> Port[a] -> LV[a] (same tier);
              LV[a]: check own sides at (x_a, sigma_a) -> to_tso {added, package?},
              to_mv {link?} (weak)
    tier t+2  MV: publish the links asked for -> to_tso {added, package?, slack_columns};
              TSO: anything added -> clear again (lazy j+1, tier t+3); else dispatch:
              setpoint[MW] to the grid and the clearing to the DSOs (weak)
    tier t+3  grid: AC power flow -> measured; DSOs: check, refine -> to_tso {check, package}
    tier t+3  TSO: every check ok (or max_rounds): the frame's record; else round k+1

At ``privacy = "full"`` (format 1) the TSO dispatches every clearing at once (no lazy
tiers, no ports).

Processes: the LV DSO entities are split into ``processes`` = K groups, each one
``RegionDSO`` simulator started with the ``cmd`` starter in its **own working folder**
``<run>/dso-<k>/`` (``<area>/area.json`` = the area's private model written by the split,
``<area>/bids.csv``, ``<area>/dso.key`` = its Ed25519 key, ``<area>/dso.secret`` = its
private secret); the MV DSO in ``<run>/dso-mv/``.
``connect=[(HOST:PORT, folder, n)]`` serves the last n LV DSOs from a ``RegionDSO`` that
was started separately (``python -m agents.region_dso HOST:PORT --remote`` in ``folder``)
and is joined with mosaik's ``connect`` starter; the runner writes those DSOs' files into
``folder`` (a stand-in for the DSO preparing its own folder). The TSO holds only the DSOs'
public keys (``<run>/tso/trusted/<dso>.pub``, handed over as PEM text) and bids without
buses; the grid and the collector run in the runner's process. Packages cross as signed
bytes inside the messages; no path crosses a process boundary except the folders the
runner itself creates.

Names: as in the study (:func:`flexcore.region.study.setup_region`), every DSO's secret is
derived from one master secret (``[region] dso_secret_file``, else fresh entropy) by
:func:`flexcore.region.ids.identities`, and each DSO derives from its own secret its public
id (its mosaik entity, its desk, its trusted key's file name), its bid pseudonyms (its
package columns, the TSO's bid table and set-points) and its salt. The TSO sees no area,
bus, load or transformer name; ``CosimOptions(tso_log=True)`` writes everything it received
and sent to ``<run>/tso/messages.jsonl``. The runner (and its tables) keep both names.
Packages follow the scenario's ``privacy``: ``"exact"`` (the default; format 2, only the
rows the clearing of the frame's request needs, :mod:`flexcore.region.publish`) or
``"full"`` (format 1: the TSO gets every DSO's linear model). The frames' requests are
announced to the DSOs with their specs (``request_mw``): exact rows hold for one request.

How each DSO starts a frame (the sides carried from the previous frame, the warm point
at its dispatch) is ``CosimOptions.policy`` (:class:`flexcore.region.dsos.FramePolicy`,
default its defaults), passed to every DSO entity. The round policy and the safety rule
are ``CosimOptions.refinement`` (:class:`flexcore.dso.refinement.RefinementPolicy`, default
its defaults with the config's ``max_rounds``), as a dict to every DSO entity (solver
margin, tightening) and to the TSO (which round is dispatched, ``agents.region_tso``): a
frame whose rounds are all AC-unsafe is ``unsafe`` and not dispatched (the grid ends it at
zero set-points), one whose last round is unsafe dispatches the cheapest safe earlier one.

Each frame: the grid applies the frame's injections (``injections``, a
:class:`~flexcore.region.dsos.FrameInjections` of the region; ``None``: static loads) and
measures the base state, every DSO re-linearises at it, the TSO clears and refines in a
same-time loop until every DSO's check is ok or ``max_rounds``, and the TSO dispatches
by the safety rule. The run folder
(``results/<UTC time>-region-cosim/``) holds ``frames.csv`` (one row per frame),
``areas.csv`` (one row per frame and DSO), ``summary.json`` and ``meta.json``.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.config import ConfigError
from simulators import FrameSimulator, meta_from_table

STEP_S = 900
#: lazy clearings per round at privacy "exact" (as ``run_region``'s ``max_cuts``)
MAX_CUTS = 200
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CosimOptions:
    frames: int = 1
    processes: int = 1
    starter: str = "cmd"                 # "cmd": DSO processes; "python": all in one
    connect: tuple[tuple[str, str, int], ...] = ()   # (HOST:PORT, folder, LV DSOs)
    day_type: str | None = None          # SimBench profiles of that day type's 2016 date
    date: str | None = None              # ... or of this 2016 date ("2016-01-20")
    tso_log: bool = False                # <run>/tso/messages.jsonl: what the TSO saw
    #: how a DSO starts a frame (flexcore.region.dsos.FramePolicy; None: its defaults)
    policy: Any = None
    #: the round policy (flexcore.dso.refinement.RefinementPolicy; None: its defaults with
    #: the config's max_rounds; its max_rounds replaces the config's)
    refinement: Any = None
    grid_engine: str = "fast"            # region grid: "fast" (fastpf) or "pandapower"


def region_injections(region, cfg, opts: CosimOptions):
    """The frames' injections from SimBench's profiles (:mod:`flexcore.region.profiles`)
    when ``opts`` or ``cfg`` names a day type or date (co-simulation frame i = quarter-hour
    ``cfg.frame + i`` of that day); None (static loads) otherwise."""
    from flexcore.region.dsos import FrameInjections
    from flexcore.region.profiles import region_profiles

    day_type = opts.day_type or getattr(cfg, "day_type", "") or None
    date = opts.date or getattr(cfg, "date", "") or None
    if day_type is None and date is None:
        return None
    inj = FrameInjections.of(region_profiles(region.net, day_type=day_type, date=date,
                                             seed=cfg.seed, source=cfg.grid))
    start = int(getattr(cfg, "frame", 0))
    if start + opts.frames > inj.frames:
        raise ConfigError(f"frames: {opts.frames} frames from quarter-hour {start} run past "
                          f"the day's {inj.frames} quarter-hours")
    return inj.window(start, opts.frames)


@dataclass
class CosimResult:
    folder: Path
    frames: list[dict[str, Any]]
    areas: list[dict[str, Any]]
    times_s: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- collector
class Collector(FrameSimulator):
    """Gathers the TSO's frame records, the grid's round records and the DSOs' round
    reports; writes the run tables at the end (runs in the runner's process)."""

    def __init__(self) -> None:
        super().__init__(meta_from_table({"Collector": {
            "public": True, "params": ["run_dir"], "attrs": ["clearing", "ac", "report"]}},
            sim_type="event-based"))
        self.clearings: dict[int, dict] = {}
        self.acs: dict[tuple[int, int], dict] = {}
        self.final_ac: dict[int, dict] = {}   # frame -> the grid's last AC record of it
        self.reports: dict[tuple[int, int, str], dict] = {}
        self.wall: dict[int, float] = {}
        self.t_start = math.nan   # when world.run started (the runner sets it)
        self.area_names: dict[str, str] = {}   # public id -> area name (the runner sets it)

    def create(self, num, model, run_dir: str):
        self.run_dir = Path(run_dir)
        _COLLECTORS[str(self.run_dir)] = self
        return [{"eid": "Collector", "type": model}]

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for c in attrs.get("clearing", {}).values():
                self.clearings[c["frame"]] = c
                self.wall[c["frame"]] = _now()
            for c in attrs.get("ac", {}).values():
                self.acs[c["frame"], c["round"]] = c
                self.final_ac[c["frame"]] = c
            for src, r in attrs.get("report", {}).items():
                self.reports[r["frame"], r["round"], src.split(".", 1)[1]] = r
        return None

    def tables(self) -> tuple[list[dict], list[dict]]:
        frames, areas = [], []
        for f, c in sorted(self.clearings.items()):
            k = c["round"]
            # where the grid ended the frame: the dispatched round, or zero set-points
            ac = self.final_ac.get(f, {})
            # each DSO's report of the dispatched round (its last one of the frame, ``final``)
            reps = {n: r for (ff, kk, n), r in self.reports.items() if ff == f and kk == k}
            checks = [r["check"] for r in reps.values() if "check" in r]
            dso_s: dict[str, float] = {}   # each DSO's own time in the frame (cumulative)
            for (ff, _, n), r in self.reports.items():
                if ff == f:
                    dso_s[n] = max(dso_s.get(n, 0.0), float(r.get("time_s", 0.0)))
            grid_s = max((float(a.get("time_s", 0.0)) for (ff, _), a in self.acs.items()
                          if ff == f), default=0.0)
            frames.append({
                "frame": f, "status": c["status"], "dispatched": c["dispatched"],
                "dispatched_round": c.get("dispatched_round"),
                "rounds": c.get("rounds_run", k), "rows_tightened": c.get("rows_tightened", 0),
                "request_mw": c["request_mw"],
                "cost_eur_per_h": c["cost_eur_per_h"],
                "delivered_mw": sum(a["delivered_mw"] for a in c["areas"].values()),
                "delivered_at_interface_mw": ac.get("delivered_at_interface_mw", math.nan),
                "ac_converged": bool(ac.get("converged", False)),
                "ac_violations": ac.get("violations", -1),
                "dso_violations": sum(x["violations"] for x in checks),
                "max_vm_err_pu": max((x["max_vm_err_pu"] for x in checks), default=math.nan),
                "max_loading_err_percent": max((x["max_loading_err_percent"]
                                                for x in checks), default=math.nan),
                "privacy": c.get("privacy", ""), "clearings": c.get("clearings", 0),
                "rows_held": c.get("rows_held", 0), "links": c.get("links", 0),
                "packages_verified": c["packages_verified"],
                "verify_time_s": c["verify_time_s"], "clearing_time_s": c["clearing_time_s"],
                "dso_time_s": sum(dso_s.values()), "grid_time_s": grid_s,
                "wall_s": self.wall[f] - self.wall.get(f - 1, self.t_start),
                "message": c["message"]})
            names = sorted(set(reps) | set(c["areas"]))
            for n in names:
                a, r = c["areas"].get(n, {}), reps.get(n, {})
                chk = r.get("check", {})
                g = ac.get("areas", {}).get(n, {})
                areas.append({
                    "frame": f, "area": self.area_names.get(n, n), "dso": n,
                    "delivered_mw": a.get("delivered_mw", 0.0),
                    "cost_eur_per_h": a.get("cost_eur_per_h", 0.0),
                    "rounds": r.get("rounds", 0), "point": a.get("point"),
                    # exact: the MV DSO's sigma, as the DSO reports it (not the TSO's)
                    "slack_dv_pu": r.get("slack_dv_pu", a.get("slack_dv_pu", 0.0)),
                    "relevant_vm_rows": chk.get("n_relevant_vm", 0),
                    "relevant_loading_rows": chk.get("n_relevant_loading", 0),
                    "max_vm_err_pu": chk.get("max_vm_err_pu", math.nan),
                    "max_loading_err_percent": chk.get("max_loading_err_percent", math.nan),
                    "violations": chk.get("violations", 0),
                    "base_violations": chk.get("base_violations", 0),
                    "ac_violations_all_rows": g.get("violations", 0),
                    "ac_base_violations_all_rows": g.get("base_violations", 0),
                    "ac_worst": g.get("worst", ""),
                    "rows_tightened": r.get("rows_tightened", 0)})
        return frames, areas

    def finalize(self):
        frames, areas = self.tables()
        for name, rows in (("frames.csv", frames), ("areas.csv", areas)):
            if rows:
                with open(self.run_dir / name, "w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)


#: the Collector of each run folder (it runs in the runner's process)
_COLLECTORS: dict[str, Collector] = {}


def _now() -> float:
    return time.perf_counter()


# --------------------------------------------------------------------------- setup
def _groups(names: list[str], k: int) -> list[list[str]]:
    k = max(1, min(k, len(names)))
    return [list(a) for a in np.array_split(np.array(names, dtype=object), k) if len(a)]


def _write_lv(folder: Path, area, bids, key, identity) -> dict:
    from cryptography.hazmat.primitives import serialization

    from flexcore.exchange.bids import write_bids
    from flexcore.region.dsos import write_area

    d = folder / area.name
    write_area(area.net, d / "area.json")
    write_bids(bids, d / "bids.csv")
    _write_key(key, d / "dso.key", serialization)
    _write_private(identity.secret, d / "dso.secret")
    return {"area_file": f"{area.name}/area.json", "bids_file": f"{area.name}/bids.csv",
            "key_file": f"{area.name}/dso.key", "secret_file": f"{area.name}/dso.secret",
            "seed": identity.seed}


def _write_key(key, path: Path, serialization) -> None:
    _write_private(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()), path)


def _write_private(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _workdir(sim_cfg: dict, wdir: Path) -> dict:
    """In-process DSO simulators (starter "python") are told their working folder; a
    process has it as its cwd (``cmd``) or its own (``connect``)."""
    return {"workdir": str(wdir)} if "python" in sim_cfg else {}


def _audit(folder: Path, region, names, pub, bids, ids, cfg, request, say) -> None:
    """``audit_published.json``: the attack on the MV packages in the TSO's log, scored
    against the runner's own copy of the MV DSO's model (the evaluator's truth)."""
    from flexcore.region.audit import write_received_audit
    from flexcore.region.dsos import mv_dso
    from flexcore.region.study import MV_NAME

    t = _now()
    mv = mv_dso(region.mv_net, [pub[n] for n in names], [region.area(n).mv_bus for n in names],
                [float(bids[n].volume_mw.sum()) for n in names], limits=region.mv_limits,
                fractions=tuple(cfg.fractions), salt=ids[MV_NAME].salt, model_names=names)
    res = write_received_audit(folder / "tso" / "messages.jsonl", mv,
                               (folder / "tso" / "trusted" / f"{MV_NAME}.pub").read_text(),
                               folder, request_mw=request, desk=MV_NAME)
    say(f"privacy audit of the {res.packages} MV packages the TSO received: nested groups "
        f"{res.nesting.count}/{res.nesting.total} ({res.links} links); audit_published.json "
        f"({_now() - t:.1f} s)")


def run_region_cosim(cfg, opts: CosimOptions, *, out: str | Path | None = None,
                     injections=None, keys: dict | None = None, quiet: bool = True,
                     region=None, bids: dict | None = None,
                     secret: str | bytes | None = None) -> CosimResult:
    """Run ``opts.frames`` frames of the region of ``cfg`` (a
    :class:`scenarios.region.RegionConfig`) as a co-simulation. ``region`` / ``bids``: an
    already split region and its bids (else from ``cfg``); ``keys``: the DSOs' private
    keys by name (else new ones); ``injections``: the region's FrameInjections; ``secret``:
    the DSOs' master secret (else ``cfg.dso_secret_file``, else fresh entropy)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from flexcore.dso.refinement import RefinementPolicy
    from flexcore.exchange.wire import public_key_pem
    from flexcore.grid.grids import load_grid
    from flexcore.region.dsos import DSO_BLAS_THREADS, write_area
    from flexcore.region.ids import identities
    from flexcore.region.split import split_region
    from flexcore.region.study import MV_NAME, region_bids
    from flexcore.runs import new_run_dir, versions, write_json
    from scenarios.runner import new_world, stop_world

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    t0 = _now()
    if region is None:
        region = split_region(load_grid(cfg.grid, allow_mvlv=True), source=cfg.grid)
    names = [a.name for a in region.areas]
    if cfg.areas:
        names = names[:cfg.areas]
    if bids is None:
        bids = region_bids(region, seed=cfg.seed, share=cfg.bid_share, areas=names)
    names = [n for n in names if n in bids]
    keys = dict(keys or {})
    for n in names + [MV_NAME]:
        keys.setdefault(n, Ed25519PrivateKey.generate())
    secret_file = getattr(cfg, "dso_secret_file", "")
    if secret is None and secret_file:
        secret = Path(secret_file).read_bytes()
    ids = identities(names + [MV_NAME], seed=cfg.seed, secret=secret)
    pub = {n: ids[n].public_id for n in names}     # area name -> what the TSO knows
    pbids = {n: ids[n].pseudonymous(bids[n]) for n in names}
    folder = new_run_dir("region-cosim", out=out)
    total = float(sum(bids[n].volume_mw.sum() for n in names))
    request = getattr(cfg, "request_mw", 0.0) or cfg.request_share * total
    frames = int(opts.frames)
    if injections is None:
        injections = region_injections(region, cfg, opts)
    if injections is not None and injections.frames < frames:
        raise ConfigError(f"the profiles hold {injections.frames} frames, {frames} asked for")

    # ---- working folders: the grid's, each DSO process's, the TSO's trusted keys
    gdir = folder / "grid"
    region_file = write_area(region.net, gdir / "region.json")
    inj_file = injections.save(gdir / "injections.npz") if injections is not None else None
    remote_n = sum(int(n) for _, _, n in opts.connect)
    local = names[:len(names) - remote_n]
    groups = [(f"RegionDSO-{k}", folder / f"dso-{k}", g)
              for k, g in enumerate(_groups(local, opts.processes))]
    start = len(local)
    connects = []
    for j, (addr, wdir, n) in enumerate(opts.connect):
        connects.append((f"RegionDSO-remote-{j}", Path(wdir), names[start:start + int(n)],
                         addr))
        start += int(n)
    specs: dict[str, dict] = {}
    for _, wdir, g, *_ in groups + connects:
        for n in g:
            specs[n] = _write_lv(wdir, region.area(n), bids[n], keys[n], ids[n])
            if injections is not None:
                sub = injections.subset(region.area(n).net)
                specs[n]["injections_file"] = str(sub.save(wdir / n / "injections.npz")
                                                  .relative_to(wdir))
            specs[n]["fractions"] = list(cfg.fractions)
    mvdir = folder / "dso-mv"
    coupled = bool(cfg.coupled)
    privacy = getattr(cfg, "privacy", "full")
    refinement = opts.refinement or RefinementPolicy(max_rounds=cfg.max_rounds)
    max_rounds = refinement.max_rounds
    announced = {"privacy": privacy, "request_mw": [request] * frames,
                 "policy": opts.policy.as_dict() if opts.policy is not None else None,
                 "refinement": asdict(refinement)}
    if coupled:
        write_area(region.mv_net, mvdir / "mv.json")
        _write_key(keys[MV_NAME], mvdir / "dso.key", serialization)
        _write_private(ids[MV_NAME].secret, mvdir / "dso.secret")
        mv_spec = {"model_file": "mv.json", "key_file": "dso.key",
                   "secret_file": "dso.secret", "seed": ids[MV_NAME].seed,
                   "areas": [pub[n] for n in names], "model_names": names,
                   "mv_buses": [region.area(n).mv_bus for n in names],
                   "volume_mw": [float(bids[n].volume_mw.sum()) for n in names],
                   "load_areas": [a.name for a in region.areas],
                   "fractions": list(cfg.fractions)}
        if injections is not None:
            mv_spec["injections_file"] = str(injections.subset(region.mv_net).save(
                mvdir / "injections.npz").relative_to(mvdir))
    tdir = folder / "tso" / "trusted"
    tdir.mkdir(parents=True)
    trusted = {pub[n]: keys[n] for n in names} | ({MV_NAME: keys[MV_NAME]} if coupled else {})
    for d, key in trusted.items():
        (tdir / f"{d}.pub").write_text(public_key_pem(key))

    # the privacy audit of what the TSO received (its log, read back after the run)
    audit = coupled and bool(getattr(cfg, "audit", False))

    # ---- mosaik
    env = {"PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in os.environ.get(
        "PYTHONPATH", "").split(os.pathsep) if p])}
    env |= {v: os.environ.get(v, "1") for v in DSO_BLAS_THREADS}   # README "... speed"
    cmd = "%(python)s -m agents.region_dso %(addr)s"
    sim_config: dict[str, dict] = {
        "RegionGrid": {"python": "simulators.region_grid:RegionGridSim"},
        "RegionTSO": {"python": "agents.region_tso:RegionTSO"},
        "Collector": {"python": "scenarios.region_cosim:Collector"}}
    for name, wdir, _ in groups + ([("RegionDSO-mv", mvdir, [])] if coupled else []):
        wdir.mkdir(parents=True, exist_ok=True)
        sim_config[name] = ({"cmd": cmd, "cwd": str(wdir), "env": env}
                            if opts.starter == "cmd" else
                            {"python": "agents.region_dso:RegionDSO"})
    for name, _, _, addr in connects:
        sim_config[name] = {"connect": addr}
    # same-time tiers per frame: per round, two per lazy clearing and one for the check
    world = new_world(sim_config, max_loop_iterations=(max_rounds + 1) * (
        2 * MAX_CUTS + 4) + 12)
    t_setup = _now() - t0
    say(f"region: {len(names)} LV DSOs in {len(groups)} process(es)"
        f"{f' + {len(connects)} joined' if connects else ''}{' + MV' if coupled else ''}; "
        f"setup {t_setup:.1f} s")
    say(f"privacy {privacy!r}: " + ("format-2 packages, rows published lazily" if
                                     privacy == "exact" else "format-1 packages"))
    try:
        with world.group():
            grid_sim = world.start("RegionGrid", region_file=str(region_file),
                                   units={b: int(bus) for n in names
                                          for b, bus in zip(pbids[n].ids, pbids[n].bus)},
                                   injections_file=str(inj_file) if inj_file else None,
                                   step_s=STEP_S, engine=opts.grid_engine)
            region_ent = grid_sim.Region()
            meter_specs = [{"name": n, "kind": "lv", "mv_bus": region.area(n).mv_bus,
                            "buses": region.area(n).net.bus.index.tolist()} for n in names]
            if coupled:
                mv_buses = region.mv_net.bus.index.tolist()
                meter_specs.append({"name": "mv", "kind": "mv", "buses": mv_buses,
                                    "trafos": [a.trafo for a in region.areas]})
            meters = {m.eid: m for m in grid_sim.Meter.create(len(meter_specs),
                                                              areas=meter_specs)}
            dsos = {}
            for name, wdir, g, *_ in groups + connects:
                sim = world.start(name, step_s=STEP_S, **_workdir(sim_config[name], wdir))
                ents = sim.LV.create(len(g), dsos=[specs[n] for n in g],
                                     max_rounds=max_rounds, coupled=coupled, **announced)
                for n, e in zip(g, ents):
                    if e.eid != pub[n]:
                        raise RuntimeError(f"DSO of {n}: public id {e.eid}, expected {pub[n]}")
                    dsos[n] = e
            ports = {}
            if coupled:
                mv_sim = world.start("RegionDSO-mv", step_s=STEP_S,
                                     **_workdir(sim_config["RegionDSO-mv"], mvdir))
                dsos[MV_NAME] = mv_sim.MV(dso=mv_spec, max_rounds=max_rounds, **announced)
                if privacy == "exact":   # the MV DSO's mailbox to each LV DSO
                    ports = {p.eid: p for p in mv_sim.Port.create(
                        len(names), areas=[pub[n] for n in names])}
            # the audit alone needs only the MV desk's messages (a day's whole log: ~0.5 GB)
            tso_sim = world.start("RegionTSO", step_s=STEP_S, log_file=str(
                folder / "tso" / "messages.jsonl") if opts.tso_log or audit else None,
                log_desks=None if opts.tso_log else [MV_NAME])
            tso = tso_sim.TSO(request_mw=[request] * frames, max_rounds=max_rounds,
                              time_limit_s=cfg.time_limit_s, mip_rel_gap=cfg.mip_rel_gap,
                              privacy=privacy, max_cuts=MAX_CUTS,
                              refinement=asdict(refinement))
            desk_specs = [{"name": pub[n], "public_key": (tdir / f"{pub[n]}.pub").read_text(),
                           "bids": {"ids": list(pbids[n].ids),
                                    "volume_mw": pbids[n].volume_mw.tolist(),
                                    "price_eur_per_mwh": pbids[n].price_eur_per_mwh.tolist()}}
                          for n in names]
            if coupled:
                desk_specs.append({"name": MV_NAME,
                                   "public_key": (tdir / f"{MV_NAME}.pub").read_text()})
            desks = {d.eid: d for d in tso_sim.Desk.create(len(desk_specs), dsos=desk_specs)}
            for n, dso in dsos.items():
                world.connect(meters[n], dso, "measured")
                world.connect(dso, desks[dso.eid], ("to_tso", "from_dso"))
                world.connect(desks[dso.eid], dso, ("to_dso", "from_tso"), weak=True)
            for n in names:
                if pub[n] in ports:   # DSO to DSO: sigma to the area, link requests back
                    world.connect(ports[pub[n]], dsos[n], ("to_lv", "from_mv"))
                    world.connect(dsos[n], ports[pub[n]], ("to_mv", "from_lv"), weak=True)
            world.connect(tso, region_ent, "setpoint[MW]", weak=True)
        col = world.start("Collector").Collector(run_dir=str(folder))
        world.connect(tso, col, "clearing")
        world.connect(region_ent, col, "ac")
        for dso in dsos.values():
            world.connect(dso, col, "report")
        t1 = _now()
        _COLLECTORS[str(folder)].t_start = t1
        _COLLECTORS[str(folder)].area_names = {pub[n]: n for n in names}
        world.run(until=frames * STEP_S, print_progress=False)
    except BaseException:
        stop_world(world)
        raise
    t_run = _now() - t1
    collector = _COLLECTORS.pop(str(folder))
    frame_rows, area_rows = collector.tables()
    times = {"setup": t_setup, "run": t_run, "per_frame": t_run / max(frames, 1)}
    write_json(folder / "summary.json", {
        "grid": cfg.grid, "frames": frame_rows, "times_s": times,
        "options": {"frames": frames, "processes": len(groups), "starter": opts.starter,
                    "joined": [(a, n) for a, _, n in opts.connect], "coupled": coupled,
                    "lv_dsos": len(names), "request_mw": request,
                    "privacy": privacy,
                    "day_type": opts.day_type, "date": opts.date,
                    "profiles": injections is not None},
        "config": asdict(cfg)})
    write_json(folder / "meta.json", {"versions": versions(), "seed": cfg.seed,
                                      "python": sys.executable})
    if audit:
        _audit(folder, region, names, pub, bids, ids, cfg, request, say)
    for r in frame_rows:
        say(f"frame {r['frame']}: {r['status']}, cost {r['cost_eur_per_h']:.2f} EUR/h, "
            f"rounds {r['rounds']}, AC violations {r['ac_violations']}, largest errors "
            f"{r['max_vm_err_pu']:.1e} p.u. / {r['max_loading_err_percent']:.1e} %")
    say(f"run {t_run:.1f} s ({times['per_frame']:.1f} s per frame); results: {folder}")
    return CosimResult(folder, frame_rows, area_rows, times)
