"""``flexcosim region SCENARIO.toml``: the region study of :mod:`flexcore.region.study`.

The TOML has one table ``[region]`` (see ``scenarios/mvlv.toml``); unknown keys and bad
values raise :class:`scenarios.config.ConfigError` naming the file and key. The run folder
``results/<UTC time>-region/`` holds ``config.resolved.toml``, ``summary.json`` (the
:class:`~flexcore.region.study.RegionReport`), ``areas.csv`` (one row per LV area plus the
MV area), ``summary.txt``, ``region.png`` (the MV map with the areas' congestion and
delivered flexibility), ``meta.json`` (versions, seed, bid total, the load values used) and
``packages/<dso>/round-<k>/``: every package as it crossed to the TSO (format 2 at
``privacy = "exact"``, format 1 at ``"full"``; signed by its DSO's key, loaded back with
that key as the only trusted one before clearing).

The request is ``request_mw`` when given (> 0), else ``request_share`` x all areas' bids.
Load values: the grid's static ones, or with ``day_type`` or ``date`` frame ``frame``
(quarter-hour 0..95) of that SimBench day (:mod:`flexcore.region.profiles`, diversified,
seeded by ``seed``).
"""
from __future__ import annotations

import csv
import math
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from flexcore.grid.grids import load_grid
from flexcore.region.dsos import SignedExchange
from flexcore.region.profiles import ProfileError, region_profiles, simbench_day
from flexcore.region.split import Region, split_region
from flexcore.region.study import (
    PRIVACY_LEVELS,
    RegionReport,
    region_bids,
    run_region,
    setup_region,
)
from flexcore.runs import new_run_dir, versions, write_json, write_toml
from scenarios.config import ConfigError


@dataclass(frozen=True)
class RegionConfig:
    grid: str = "simbench:1-MVLV-semiurb-all-0-sw"
    seed: int = 1
    request_share: float = 0.5
    bid_share: tuple[float, float] = (0.5, 2.5)
    max_rounds: int = 3
    areas: int = 0
    coupled: bool = True
    fractions: tuple[float, ...] = (0.0, 0.5, 1.0)
    time_limit_s: float = 300.0
    mip_rel_gap: float = 1e-3
    request_mw: float = 0.0
    day_type: str = ""
    date: str = ""
    frame: int = 0
    #: audit the MV package and the largest LV package before clearing (audit_mv/lv.json)
    audit: bool = True
    #: "exact": format-2 packages with lazily published rows and links (README "Privacy of
    #: the region's packages"); "full": format 1 (research)
    privacy: str = "exact"
    #: a file holding the DSOs' master secret (ids, pseudonyms, salts); "": fresh per run
    dso_secret_file: str = ""


_TYPES: dict[str, type] = {"grid": str, "seed": int, "request_share": float,
                           "bid_share": list, "max_rounds": int, "areas": int, "coupled": bool,
                           "fractions": list, "time_limit_s": float,
                           "mip_rel_gap": float, "request_mw": float, "day_type": str,
                           "date": str, "frame": int, "audit": bool, "privacy": str,
                           "dso_secret_file": str}


def load_region_config(path: str | Path) -> RegionConfig:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    extra = sorted(set(doc) - {"region"})
    if extra or "region" not in doc:
        raise ConfigError(f"{path}: needs exactly one table [region] (found {sorted(doc)})")
    data: dict[str, Any] = dict(doc["region"])
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"{path}: [region] unknown key(s) {unknown}; allowed: "
                          f"{sorted(_TYPES)}")
    for key, value in data.items():
        want = _TYPES[key]
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok, data[key] = True, float(value)
        if not ok:
            raise ConfigError(f"{path}: [region] {key} must be a {want.__name__}, got "
                              f"{value!r}")
    if "bid_share" in data:
        bs = data["bid_share"]
        if len(bs) != 2 or not all(isinstance(v, (int, float)) for v in bs) or \
                not 0 < bs[0] <= bs[1]:
            raise ConfigError(f"{path}: [region] bid_share must be [low, high] with "
                              f"0 < low <= high, got {bs!r}")
        data["bid_share"] = (float(bs[0]), float(bs[1]))
    if "fractions" in data:
        fr = data["fractions"]
        if not fr or 0.0 not in fr or not all(isinstance(v, (int, float)) and 0 <= v <= 1
                                             for v in fr):
            raise ConfigError(f"{path}: [region] fractions must lie in [0, 1] and include 0, "
                              f"got {fr!r}")
        data["fractions"] = tuple(float(v) for v in fr)
    if not 0 < data.get("request_share", 0.5) <= 1:
        raise ConfigError(f"{path}: [region] request_share must be in (0, 1]")
    if data.get("areas", 0) < 0 or data.get("max_rounds", 3) < 0:
        raise ConfigError(f"{path}: [region] areas and max_rounds must be >= 0")
    if data.get("request_mw", 0.0) < 0:
        raise ConfigError(f"{path}: [region] request_mw must be >= 0 (0: use request_share)")
    if data.get("day_type") or data.get("date"):
        try:
            simbench_day(data.get("day_type") or None, data.get("date") or None)
        except ProfileError as exc:
            raise ConfigError(f"{path}: [region] {exc}") from None
    if data.get("privacy", "exact") not in PRIVACY_LEVELS:
        raise ConfigError(f"{path}: [region] privacy must be one of {list(PRIVACY_LEVELS)}, "
                          f"got {data['privacy']!r}")
    secret_file = data.get("dso_secret_file", "")
    if secret_file and not (path.parent / secret_file).is_file():
        raise ConfigError(f"{path}: [region] dso_secret_file {secret_file!r}: no such file")
    if secret_file:
        data["dso_secret_file"] = str((path.parent / secret_file).resolve())
    if not 0 <= data.get("frame", 0) < 96:
        raise ConfigError(f"{path}: [region] frame must be a quarter-hour of the day, 0..95, "
                          f"got {data['frame']!r}")
    return RegionConfig(**data)


def run_region_study(cfg: RegionConfig, *, out: str | Path | None = None,
                     quiet: bool = False) -> tuple[RegionReport, Path]:
    """Load and split the region, make the DSOs' packages, clear, check, refine; write the
    run folder and return the report and the folder."""
    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    t0 = time.perf_counter()
    net = load_grid(cfg.grid, allow_mvlv=True)
    profile: dict[str, Any] = {"values": "static (the grid's own p_mw / q_mvar)"}
    if cfg.day_type or cfg.date:
        rp = region_profiles(net, day_type=cfg.day_type or None, date=cfg.date or None,
                             seed=cfg.seed, source=cfg.grid)
        rp.apply(net, cfg.frame)
        profile = {"values": "SimBench profiles, diversified (flexcore.region.profiles)",
                   "date": rp.date.isoformat(), "day_type": rp.day_type, "frame": cfg.frame,
                   "start": str(rp.timestamps[cfg.frame]),
                   **{k: float(v) for k, v in rp.totals_mw().iloc[cfg.frame].items()}}
        say(f"frame {cfg.frame} of {rp.date} ({rp.day_type}), {rp.timestamps[cfg.frame]}: "
            f"load {profile['load_p_mw']:.2f} MW, sgen {profile['sgen_p_mw']:.2f} MW")
    region = split_region(net, source=cfg.grid)
    t_split = time.perf_counter() - t0
    say(f"split {cfg.grid}: {len(region.areas)} LV areas, {len(region.mv_net.bus)} MV buses "
        f"({t_split:.1f} s)")
    names = [a.name for a in region.areas]
    if cfg.areas:
        names = names[:cfg.areas]
    bids = region_bids(region, seed=cfg.seed, share=cfg.bid_share, areas=names)
    secret = Path(cfg.dso_secret_file).read_bytes() if cfg.dso_secret_file else None
    setup = setup_region(region, bids, coupled=cfg.coupled, fractions=cfg.fractions,
                         seed=cfg.seed, secret=secret)
    say(f"packages: {len(setup.lv)} LV areas{' + MV' if setup.mv else ''} "
        f"({sum(setup.times_s.values()):.1f} s)")
    total = float(sum(b.volume_mw.sum() for b in bids.values()))
    request = cfg.request_mw or cfg.request_share * total
    folder = new_run_dir("region", out=out)
    if cfg.audit and setup.mv is not None:  # before the run refines the packages in place
        from flexcore.region.audit import write_region_audit

        t1 = time.perf_counter()
        write_region_audit(setup, folder)
        say(f"privacy audit of the MV package and one LV package: audit_mv.json, "
            f"audit_lv.json ({time.perf_counter() - t1:.1f} s)")
    exchange = SignedExchange(folder / "packages", [d.name for d in setup.lv] + ["mv"])
    report = run_region(setup, request, max_rounds=cfg.max_rounds,
                        grid_name=cfg.grid, exchange=exchange, time_limit_s=cfg.time_limit_s,
                        mip_rel_gap=cfg.mip_rel_gap, privacy=cfg.privacy, seed=cfg.seed)
    report.times_s = {"load_and_split": t_split, **report.times_s}
    if cfg.audit and report.published is not None and report.published.mv is not None:
        from flexcore.region.audit import write_published_audit

        pa = write_published_audit(setup, report.published, folder)
        say(f"what the coupled clearing published: {pa.links} of {pa.areas} links, nested "
            f"area groups revealed {pa.nesting.count}/{pa.nesting.total} (every link: "
            f"{pa.nesting_all_links.count}); audit_mv_published.json")
    write_toml(folder / "config.resolved.toml", {"region": asdict(cfg)},
               header="# resolved region scenario (runnable: flexcosim region THIS_FILE)")
    write_json(folder / "summary.json", report.as_dict())
    write_json(folder / "meta.json", {"versions": versions(), "seed": cfg.seed,
                                      "bids_total_mw": total, "profile": profile})
    with open(folder / "areas.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["area", "bids", "delivered_mw", "cost_eur_per_h", "rounds", "point",
                    "slack_dv_pu", "relevant_vm_rows", "relevant_loading_rows",
                    "max_vm_err_pu", "max_loading_err_percent", "violations",
                    "base_violations", "binding_vm_rows", "binding_loading_rows",
                    "vm_min_pu", "vm_max_pu", "max_abs_loading_percent"])
        for a in report.areas + [report.mv]:
            c = a.check
            w.writerow([a.name, a.bids, a.delivered_mw, a.cost_eur_per_h, a.rounds, a.point,
                        a.slack_dv_pu, c.n_relevant_vm, c.n_relevant_loading, c.max_vm_err_pu,
                        c.max_loading_err_percent, c.violations, c.base_violations,
                        c.n_binding_vm, c.n_binding_loading, c.vm_min_pu, c.vm_max_pu,
                        c.max_abs_loading_percent])
    (folder / "summary.txt").write_text(report.as_text() + "\n")
    write_region_plot(folder / "region.png", region, report)
    say(report.as_text())
    say(f"results: {folder}")
    return report, folder


def write_region_plot(path: Path, region: Region, report: RegionReport) -> Path:
    """``region.png``: the MV lines by their loading in the final dispatch's AC power flow
    of the whole region, each LV area at its MV bus by its worst loading and by the
    flexibility it delivered (:func:`flexcore.study.plotting.region_figure`)."""
    from flexcore.study.plotting import plot_region

    by_name = {a.name: a for a in report.areas}
    rows = []
    for a in region.areas:
        rep = by_name.get(a.name)
        c = rep.check if rep is not None else None
        rows.append({"mv_bus": a.mv_bus, "delivered_mw": rep.delivered_mw if rep else 0.0,
                     "max_abs_loading_percent": c.max_abs_loading_percent if c else math.nan,
                     "binding": (c.n_binding_vm + c.n_binding_loading) if c else 0})
    areas = pd.DataFrame(rows, index=[a.name for a in region.areas])
    ac = report.ac
    line_ld = None
    if ac is not None and ac.converged:
        line_ld = pd.Series({i: ac.loading_percent.get(("line", int(i)), math.nan)
                             for i in region.mv_net.line.index}, dtype=float)
    mv = report.mv.check
    title = (f"{report.grid}: request {report.request_mw:.2f} MW, cost "
             f"{report.cost_eur_per_h:.2f} EUR/h, AC-safe {report.ac_safe}; MV "
             f"{mv.vm_min_pu:.3f}..{mv.vm_max_pu:.3f} p.u., binding rows MV "
             f"{report.binding_mv_rows} / LV {report.binding_lv_rows}")
    return plot_region(region.mv_net, areas, path, line_loading_percent=line_ld, title=title)
