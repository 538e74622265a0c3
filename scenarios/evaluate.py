"""``flexcosim evaluate``: the source's Table 1 and Figures 5-8, the linearisation study,
the co-simulation over time, and the comparison with the AC OPF and sequential LP.

Writes a new run folder with ``report.md``, ``tables.json`` (every number of the report),
``versions.json`` and the PNG figures. Sections:

1. one frame as in the source (Bergwald, P_E = 1.8 MW, points 0 / 0.5 / 1, seeded bids):
   Figures 5-8 and Table 1 for the fixed points and after refinement rounds;
2. the error against the linearisation: m = 1, 3, 5, 9 points x 0-3 refinement rounds,
   and the DC-PTDF / LinDistFlow baseline (:mod:`flexcore.study.baselines`);
3. over time: the per-frame error and AC-violation distribution of a co-simulation run
   (``<run>/timeseries/frames.parquet`` or ``frames.csv``, the table ``scenarios.results``
   writes; the columns in :data:`OVER_TIME_COLUMNS` are read by name), run in-process with
   :func:`scenarios.runner.run_scenario` when a scenario TOML is given;
4. optimality and speed against AC OPF and SLP on the full model at several load levels.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flexcore.errors import FlexcosimError, InputFileError

#: the source's Table 1 (one frame, m = 3), shown for comparison
SOURCE_TABLE1 = {"vm_mae_pu": 2.3e-5, "vm_rmse_pu": 2.6e-5,
                 "loading_mae_percent": 6.1e-3, "loading_rmse_percent": 9.8e-3}
ERROR_KEYS = ("vm_mae_pu", "vm_rmse_pu", "loading_mae_percent", "loading_rmse_percent")
#: the columns of the co-simulation's frames table (scenarios.results.FRAME_COLUMNS) read here
OVER_TIME_COLUMNS = ("day_type", "slot", "status", "request_mw", "delivered_mw", *ERROR_KEYS,
                     "ac_violations")


class FramesTableError(FlexcosimError, ValueError):
    """A frames table that lacks columns the over-time statistics read."""


@dataclass(frozen=True)
class EvalOptions:
    """What the evaluation runs (defaults: the full version)."""

    grid: str = "bergwald"
    request_mw: float = 1.8
    seed: int = 1
    fractions: tuple[float, ...] = (0.0, 0.5, 1.0)
    rounds: int = 3  # refinement rounds for Table 1 (coordinate() stops when accurate)
    m_values: tuple[int, ...] = (1, 3, 5, 9)
    sweep_rounds: int = 3
    load_levels: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    slp_max_iter: int = 10
    ac_opf: bool = True  # section 4's AC OPF reference (most of the quick report's time)
    n_critical: int = 20
    salt: str = "evaluate"

    @classmethod
    def quick(cls) -> EvalOptions:
        """One load level, fewer points and rounds, SLP as the only full-model reference."""
        return cls(rounds=1, m_values=(1, 3), sweep_rounds=1, load_levels=(1.0,),
                   ac_opf=False)


@dataclass
class EvaluationResult:
    run_dir: Path
    report: Path
    tables: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- setup
def setup(options: EvalOptions):
    """(net, bids, Linearizer) of the single-frame study (bids: :func:`synthetic_bids`'s
    defaults, building types from the shipped table on Bergwald)."""
    from flexcore.dso.linearizer import Linearizer
    from flexcore.grid.grids import load_grid
    from flexcore.study.bidgen import synthetic_bids

    net = load_grid(options.grid)
    bids = synthetic_bids(net, seed=options.seed)
    return net, bids, Linearizer(net, bids, salt=options.salt)


def _errors(obj) -> dict:
    return {k: float(getattr(obj, k)) for k in ERROR_KEYS}


# --------------------------------------------------------------------------- section 1
def single_frame(lin, bids, options: EvalOptions, fig_dir: Path) -> dict:
    """Table 1 (fixed points = round 0; after refinement = last round) and Figures 5-8."""
    from flexcore.market import clear
    from flexcore.study.coordination import coordinate
    from flexcore.study.plotting import plot_grid

    t0 = time.perf_counter()
    res = coordinate(lin, bids, options.request_mw, fractions=options.fractions,
                     max_rounds=options.rounds)
    wall = time.perf_counter() - t0
    first, last = res.rounds[0], res.rounds[-1]
    out = {"setup": {"grid": options.grid, "request_mw": options.request_mw,
                     "seed": options.seed, "fractions": list(options.fractions),
                     "max_rounds": options.rounds, "salt": options.salt},
           "rounds": [asdict(r) for r in res.rounds],
           "fixed_points": {**_errors(first), "cost_eur_per_h": first.cost_eur_per_h,
                            "violations": first.violations},
           "after_rounds": {**_errors(last), "cost_eur_per_h": last.cost_eur_per_h,
                            "violations": last.violations, "rounds": last.round},
           "source": dict(SOURCE_TABLE1), "safe": res.safe, "time_s": wall, "figures": {}}
    if res.clearing.status != "optimal":
        return out
    figs = out["figures"]
    # Figure 5: every bid fully activated
    over = [f"{e} {i}" for (e, i), v in zip(lin.keymap.loading_percent.values(),
                                            lin.power_flow(bids.volume_mw)[1]) if abs(v) > 100]
    out["all_active_congested"] = over
    figs["fig5"] = plot_grid(lin.net, fig_dir / "fig5_all_active.png",
                             title="Figure 5: all flexibility activated").name
    lin.power_flow(res.clearing)
    figs["fig6"] = plot_grid(lin.net, fig_dir / "fig6_after_clearing.png",
                             title="Figure 6: after clearing (refined)").name
    # Figures 7/8 for the fixed-point clearing and for the final one
    fixed = clear(lin.linearize(options.fractions).package, bids.without_bus(),
                  options.request_mw)
    for tag, clearing in (("fixed", fixed), ("refined", res.clearing)):
        rep = lin.validate(clearing)
        figs.update(_critical_figures(lin, clearing, rep, fig_dir, tag, options.n_critical))
    return out


def _critical_figures(lin, clearing, rep, fig_dir: Path, tag: str, n: int) -> dict:
    from flexcore.study.plotting import plot_pf_vs_prediction

    lim = lin.limits
    vk = list(rep.ac_vm_pu)
    vm = np.array([rep.ac_vm_pu[k] for k in vk])
    margin = np.minimum(vm - lim.vm_min_pu, lim.vm_max_pu - vm)
    sel = [vk[i] for i in np.argsort(margin, kind="stable")[:n]]
    labels = [f"bus {lin.keymap.vm_pu[k]}" for k in sel]
    f7 = plot_pf_vs_prediction(labels, [rep.ac_vm_pu[k] for k in sel],
                               [clearing.predicted_vm_pu[k] for k in sel],
                               fig_dir / f"fig7_voltages_{tag}.png", ylabel="voltage (p.u.)",
                               title=f"Figure 7 ({tag}): {n} buses closest to a voltage limit",
                               limits=(lim.vm_max_pu,), errors=True)
    lk = list(rep.ac_loading_percent)
    ld = np.array([abs(rep.ac_loading_percent[k]) for k in lk])
    sel = [lk[i] for i in np.argsort(-ld, kind="stable")[:n]]
    labels = ["{} {}".format(*lin.keymap.loading_percent[k]) for k in sel]
    f8 = plot_pf_vs_prediction(labels, [abs(rep.ac_loading_percent[k]) for k in sel],
                               [abs(clearing.predicted_loading_percent[k]) for k in sel],
                               fig_dir / f"fig8_loadings_{tag}.png", ylabel="loading (%)",
                               title=f"Figure 8 ({tag}): {n} most loaded branches",
                               limits=(lim.loading_max_percent,), errors=True)
    return {f"fig7_{tag}": f7.name, f"fig8_{tag}": f8.name}


# --------------------------------------------------------------------------- section 2
def _round_rows(lin, bids, request_mw: float, package, *, rounds: int, t_dso: float,
                label: str) -> list[dict]:
    """Clear, validate and refine ``rounds`` times (no early stop); cumulative times."""
    from flexcore.dso.refinement import RefinementPolicy, RefinementSession, Verdict
    from flexcore.market import clear

    session = RefinementSession(lin, policy=RefinementPolicy(max_rounds=rounds,
                                                             stop_when_accurate=False))
    step = session.open(package)
    rows, t_tso, tso_bids = [], 0.0, bids.without_bus()
    m0 = package.m
    while True:
        t0 = time.perf_counter()
        res = clear(step, tso_bids, request_mw)
        t_tso += time.perf_counter() - t0
        step = session.on_clearing(res)
        rec = session.records[-1]
        t_dso += rec.dso_time_s
        row = {"linearisation": label, "m": m0, "rounds": rec.round, "status": res.status,
               "cost_eur_per_h": math.nan, **{e: math.nan for e in ERROR_KEYS}, "violations": None}
        rep = rec.validation
        if rep is not None:
            row.update(cost_eur_per_h=res.cost_eur_per_h, **_errors(rep),
                       violations=len(rep.violations))
        rows.append({**row, "dso_time_s": t_dso, "tso_time_s": t_tso})
        if isinstance(step, Verdict):
            return rows


def linearisation_study(lin, bids, options: EvalOptions) -> dict:
    """Error, cost and time for m points x refinement rounds, and the DC baseline."""
    from flexcore.study.baselines import dc_package

    rows = []
    for m in options.m_values:
        t0 = time.perf_counter()
        pkg = lin.linearize(tuple(np.linspace(0.0, 1.0, m))).package
        rows += _round_rows(lin, bids, options.request_mw, pkg, rounds=options.sweep_rounds,
                            t_dso=time.perf_counter() - t0, label="AC")
    t0 = time.perf_counter()
    dc = dc_package(lin)
    rows += _round_rows(lin, bids, options.request_mw, dc, rounds=0,
                        t_dso=time.perf_counter() - t0, label="DC-PTDF")
    # the same dispatches predicted by both one-point packages (isolates the slopes)
    ac1 = lin.linearize((0.0,)).package
    same = []
    ref_x = _refined_dispatch(lin, bids, options)
    for scale in (0.02, 0.1, 0.25, 0.5, 1.0):
        x = scale * ref_x
        vm, ld = lin.power_flow(x)
        entry = {"dispatch": f"{scale:g} x refined optimum", "total_mw": float(x.sum())}
        for name, pkg in (("ac", ac1), ("dc", dc)):
            pv, pl = pkg.predict(0, x)
            entry[f"{name}_vm_mae_pu"] = float(np.mean(np.abs(pv - vm)))
            entry[f"{name}_loading_mae_percent"] = float(np.mean(np.abs(np.abs(pl) - np.abs(ld))))
        same.append(entry)
    return {"rows": rows, "same_dispatch": same}


def _refined_dispatch(lin, bids, options: EvalOptions) -> np.ndarray:
    from flexcore.study.coordination import coordinate

    res = coordinate(lin, bids, options.request_mw, fractions=options.fractions,
                     max_rounds=options.rounds)
    if res.clearing.status != "optimal":
        return np.zeros(len(bids))
    return res.clearing.activation_vector(bids.ids)


# --------------------------------------------------------------------------- section 3
def find_frames(run_dir: str | Path) -> Path | None:
    """``frames.parquet`` / ``frames.csv`` in ``run_dir/timeseries`` or ``run_dir`` (or the
    path itself if it is a file)."""
    p = Path(run_dir)
    if p.is_file():
        return p
    for cand in (p / "timeseries" / "frames.parquet", p / "timeseries" / "frames.csv",
                 p / "frames.parquet", p / "frames.csv"):
        if cand.is_file():
            return cand
    return None


def read_frames(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def over_time_stats(frames, *, source: str = "frames table") -> dict:
    """Median, 95th percentile (linear interpolation) and worst frame of every per-frame
    error, over frames where the error is finite; AC violations over all frames. ``frames``
    must have the :data:`OVER_TIME_COLUMNS` (FramesTableError naming ``source`` otherwise)."""
    missing = [c for c in OVER_TIME_COLUMNS if c not in frames.columns]
    if missing:
        raise FramesTableError(f"{source}: missing column(s) {missing} (a frames table of "
                               "flexcosim run has them)")
    out = {"n_frames": int(len(frames)), "metrics": {}, "by_day_type": {}}

    def describe(row_idx) -> dict:
        row = frames.loc[row_idx]
        return {k: _plain(row[k])
                for k in ("day_type", "slot", "status", "request_mw", "delivered_mw")}

    for key in ERROR_KEYS + ("ac_violations",):
        vals = frames[key].astype(float)
        ok = vals[np.isfinite(vals)]
        if not len(ok):
            continue
        worst = ok.idxmax()
        out["metrics"][key] = {"n": int(len(ok)), "median": float(np.median(ok)),
                               "p95": float(np.percentile(ok, 95)), "max": float(ok.max()),
                               "worst_frame": {"index": _plain(worst), **describe(worst)}}
    v = frames["ac_violations"].astype(float).fillna(0)
    out["frames_with_violations"] = int((v > 0).sum())
    out["cost"] = cost_stats(frames)
    out["status_counts"] = {str(k): int(n) for k, n in
                            frames["status"].astype(str).value_counts().items()}
    for dt, grp in frames.groupby("day_type", sort=False):
        entry = {"frames": int(len(grp))}
        for key in ("vm_mae_pu", "loading_mae_percent"):
            vals = grp[key].astype(float)
            vals = vals[np.isfinite(vals)]
            entry[f"{key}_median"] = float(np.median(vals)) if len(vals) else math.nan
            entry[f"{key}_max"] = float(vals.max()) if len(vals) else math.nan
        entry["frames_with_violations"] = int(
            (grp["ac_violations"].astype(float).fillna(0) > 0).sum())
        out["by_day_type"][str(dt)] = entry
    return out


#: the frames table's cost column (EUR/h), newest name first
COST_COLUMNS = ("cost_eur_per_h", "cost_eur")


def frame_hours(frames) -> float:
    """Length of a frame (h): a frame's clock time over its slot of the day (``timestamp``
    and ``slot`` columns, e.g. 18:00 at slot 72 -> 0.25 h), else 15 minutes."""
    import pandas as pd

    if "timestamp" in frames and "slot" in frames:
        t = pd.DatetimeIndex(pd.to_datetime(frames["timestamp"]))
        slot = frames["slot"].to_numpy(float)
        ok = slot > 0
        if ok.any():
            minutes = (t.hour * 60 + t.minute).to_numpy(float)[ok] / slot[ok]
            return float(np.median(minutes)) / 60.0
    return 0.25


def cost_stats(frames) -> dict | None:
    """The balancing cost per frame (``cost_eur_per_h``, or ``cost_eur`` in tables written
    before it was renamed; both EUR/h): frames with a cost, mean and highest rate, and the
    energy cost (EUR) = sum of rate x frame length. None without a cost column."""
    col = next((c for c in COST_COLUMNS if c in frames.columns), None)
    if col is None:
        return None
    rate = frames[col].astype(float).fillna(0.0)
    h = frame_hours(frames)
    paid = rate[rate != 0]
    return {"column": col, "frame_h": h, "frames_with_cost": int(len(paid)),
            "mean_eur_per_h": float(paid.mean()) if len(paid) else 0.0,
            "max_eur_per_h": float(rate.max()) if len(rate) else 0.0,
            "energy_cost_eur": float(rate.sum() * h)}


def _plain(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    return x


def over_time(*, run_dir=None, scenario=None, eval_dir: Path, quick: bool = False) -> dict:
    """Statistics of a co-simulation run: ``run_dir`` if given (InputFileError if it holds
    no frames table), else a run of the ``scenario`` TOML into ``eval_dir/cosim`` (quick:
    frames 68-72 of the winter workday), else ``available = False``."""
    if run_dir is not None:
        source = find_frames(run_dir)
        if source is None:
            raise InputFileError(f"{run_dir}: no frames table (timeseries/frames.parquet or "
                                 "frames.csv)")
    elif scenario is not None:
        from scenarios.runner import apply_overrides, load_config, run_scenario

        cfg = load_config(scenario)
        if quick:
            cfg = apply_overrides(cfg, day_types="winter_workday", frames="68-72")
        cosim, _ = run_scenario(cfg, out=eval_dir / "cosim", quiet=True)
        source = cosim / "timeseries" / "frames.parquet"
    else:
        return {"available": False, "reason": "no run folder or scenario given"}
    frames = read_frames(source)
    stats = over_time_stats(frames, source=str(source))
    from flexcore.study.plotting import plot_over_time

    fig = plot_over_time(frames, eval_dir / "figures" / "over_time.png",
                         title=f"co-simulation over time ({len(frames)} frames)")
    return {"available": True, "source": str(source), **stats, "figure": fig.name}


# --------------------------------------------------------------------------- section 4
def optimality(lin, bids, options: EvalOptions) -> list[dict]:
    """MILP with refinement vs SLP vs AC OPF at each load level, side by side."""
    from flexcore.study.baselines import ac_check, ac_opf, slp
    from flexcore.study.coordination import coordinate

    p0 = lin.net.load.p_mw.to_numpy(float).copy()
    q0 = lin.net.load.q_mvar.to_numpy(float).copy()
    rows = []
    try:
        for level in options.load_levels:
            lin.set_base(load_p_mw=p0 * level, load_q_mvar=q0 * level)
            request = options.request_mw
            t0 = time.perf_counter()
            res = coordinate(lin, bids, request, fractions=options.fractions,
                             max_rounds=options.rounds)
            if res.clearing.status == "infeasible" and res.clearing.diagnosis \
                    and res.clearing.diagnosis.max_deliverable_mw:
                request = round(0.95 * res.clearing.diagnosis.max_deliverable_mw, 3)
                t0 = time.perf_counter()
                res = coordinate(lin, bids, request, fractions=options.fractions,
                                 max_rounds=options.rounds)
            t_milp = time.perf_counter() - t0
            row = {"load_level": level, "request_mw": request, "milp_status": res.clearing.status,
                   "milp_time_s": t_milp}
            if res.clearing.status != "optimal":
                rows.append(row)
                continue
            x = res.activation(bids.ids)
            chk = ac_check(lin, x)
            row.update(milp_cost_eur_per_h=res.clearing.cost_eur_per_h,
                       milp_ac_feasible=chk.feasible,
                       milp_rounds=res.rounds[-1].round)
            s = slp(lin, bids, request, max_iter=options.slp_max_iter)
            row["slp"] = s.summary()
            methods = [s]
            if options.ac_opf:
                guess = s.ac.ext_grid_p_mw if s.ac is not None and s.ac.converged else None
                o = ac_opf(lin, bids, request, ext_grid_guess_mw=guess)
                row["opf"] = o.summary()
                methods.append(o)
                row["time_ratio_opf"] = t_milp / o.time_s if o.time_s > 0 else math.nan
            refs = [r for r in methods if r.ok and r.ac is not None and r.ac.feasible] or \
                [r for r in methods if r.ok]
            if refs:
                best = min(refs, key=lambda r: r.cost_eur_per_h)
                row.update(best_reference=best.method,
                           cost_ratio=res.clearing.cost_eur_per_h / best.cost_eur_per_h)
            row["time_ratio_slp"] = t_milp / s.time_s if s.time_s > 0 else math.nan
            rows.append(row)
    finally:
        lin.set_base(load_p_mw=p0, load_q_mvar=q0)
    return rows


# --------------------------------------------------------------------------- report
def _e(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2e}"


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render(tables: dict) -> str:
    """The Markdown report from ``tables`` (every number printed comes from it)."""
    t1 = tables["single_frame"]
    s = t1["setup"]
    md = ["# flexcosim evaluation", "",
          f"Mode: {'quick' if tables['quick'] else 'full'}. Grid {s['grid']}, "
          f"P_E = {s['request_mw']} MW, operating points {s['fractions']}, "
          f"synthetic_bids(seed={s['seed']}), up to {s['max_rounds']} refinement round(s).", "",
          "## 1. One frame as in the source", "",
          "Table 1: MILP estimate vs AC power flow at the cleared activation "
          "(loadings compared as magnitudes).", ""]
    fp, ar, src = t1["fixed_points"], t1["after_rounds"], t1["source"]
    md.append(_table(
        ["", "voltages MAE (p.u.)", "voltages RMSE (p.u.)", "loadings MAE (%)",
         "loadings RMSE (%)", "cost (EUR/h)", "AC violations"],
        [["source (m = 3)", _e(src["vm_mae_pu"]), _e(src["vm_rmse_pu"]),
          _e(src["loading_mae_percent"]), _e(src["loading_rmse_percent"]), "", "none"],
         ["fixed points (round 0)", _e(fp["vm_mae_pu"]), _e(fp["vm_rmse_pu"]),
          _e(fp["loading_mae_percent"]), _e(fp["loading_rmse_percent"]), _f(fp["cost_eur_per_h"]),
          fp["violations"]],
         [f"after {ar['rounds']} refinement round(s)", _e(ar["vm_mae_pu"]), _e(ar["vm_rmse_pu"]),
          _e(ar["loading_mae_percent"]), _e(ar["loading_rmse_percent"]), _f(ar["cost_eur_per_h"]),
          ar["violations"]]]))
    md += ["", f"Dispatchable (AC limits kept): {t1['safe']}. All bids active congests "
               f"{len(t1.get('all_active_congested', []))} branch(es): "
               f"{', '.join(t1.get('all_active_congested', [])[:10]) or 'none'}.", ""]
    for key, name in sorted(t1["figures"].items()):
        md.append(f"![{key}](figures/{name})")
    lin = tables["linearisation"]
    md += ["", "## 2. Error against the linearisation", "",
           "m points at fractions linspace(0, 1, m); each refinement round adds the cleared "
           "activation as a point. Times are cumulative (DSO: linearisation, AC validation "
           "and refinement; TSO: clearing).", ""]
    md.append(_table(
        ["linearisation", "m", "rounds", "status", "cost (EUR/h)", "vm MAE (p.u.)",
         "vm RMSE (p.u.)", "loading MAE (%)", "loading RMSE (%)", "AC violations", "DSO (s)",
         "TSO (s)"],
        [[r["linearisation"], r["m"], r["rounds"], r["status"], _f(r["cost_eur_per_h"]),
          _e(r["vm_mae_pu"]), _e(r["vm_rmse_pu"]), _e(r["loading_mae_percent"]),
          _e(r["loading_rmse_percent"]), r["violations"], _f(r["dso_time_s"], 3),
          _f(r["tso_time_s"], 3)] for r in lin["rows"]]))
    md += ["", "The same dispatches predicted by the one-point AC package and the DC "
               "package (both at zero activation; only the slopes differ). The AC error grows "
               "with the square of the step (curvature); the DC error has a first-order part "
               "from its slopes, which dominates for small steps and can partly cancel the "
               "curvature for large ones:", ""]
    md.append(_table(["dispatch", "total (MW)", "AC vm MAE (p.u.)", "DC vm MAE (p.u.)",
                      "AC loading MAE (%)", "DC loading MAE (%)"],
                     [[d["dispatch"], _f(d["total_mw"], 3), _e(d["ac_vm_mae_pu"]),
                       _e(d["dc_vm_mae_pu"]), _e(d["ac_loading_mae_percent"]),
                       _e(d["dc_loading_mae_percent"])] for d in lin["same_dispatch"]]))
    ot = tables["over_time"]
    md += ["", "## 3. Over time (co-simulation)", ""]
    if not ot.get("available"):
        md.append(f"co-simulation results not available ({ot.get('reason', '')}).")
    else:
        md += [f"Source: `{ot['source']}`, {ot['n_frames']} frames; frames with AC limit "
               f"violations: {ot.get('frames_with_violations', 'n/a')}; clearing status: "
               f"{ot.get('status_counts', 'n/a')}.", ""]
        rows = []
        for key, st in ot["metrics"].items():
            w = st["worst_frame"]
            why = (f"frame {w['index']}: {w.get('day_type')} slot {w.get('slot')}, request "
                   f"{w.get('request_mw')} MW, status {w.get('status')}")
            rows.append([key, st["n"], _e(st["median"]), _e(st["p95"]), _e(st["max"]), why])
        md.append(_table(["metric", "frames", "median", "95th percentile", "worst", "worst frame"],
                         rows))
        if ot["by_day_type"]:
            md += ["", "Per day type:", ""]
            md.append(_table(["day type", "frames", "vm MAE median (p.u.)", "vm MAE max (p.u.)",
                              "loading MAE median (%)", "loading MAE max (%)",
                              "frames with violations"],
                             [[dt, e["frames"], _e(e.get("vm_mae_pu_median")),
                               _e(e.get("vm_mae_pu_max")), _e(e.get("loading_mae_percent_median")),
                               _e(e.get("loading_mae_percent_max")),
                               e.get("frames_with_violations", "n/a")]
                              for dt, e in ot["by_day_type"].items()]))
        if ot.get("cost"):
            c = ot["cost"]
            md += ["", f"Balancing cost (`{c['column']}`, EUR/h while a frame lasts): "
                       f"{c['frames_with_cost']} frames with a cost, mean "
                       f"{_f(c['mean_eur_per_h'])} EUR/h, highest {_f(c['max_eur_per_h'])} "
                       f"EUR/h; energy cost over the run {_f(c['energy_cost_eur'])} EUR "
                       f"({c['frame_h']:g} h frames)."]
        if ot.get("figure"):
            md += ["", f"![over time](figures/{ot['figure']})"]
    md += ["", "## 4. Optimality and speed against the full model", "",
           "Loads scaled by the load level; AC OPF = pandapower runopp (PIPS, external grid "
           "pinned, iterated for losses; a failure is reported as pp.OPFNotConverged); SLP = "
           "one AC point at the current dispatch, clear, repeat. Cost ratio = MILP / best "
           "AC-feasible reference; time ratio = MILP / reference wall time.", ""]
    rows = []
    for r in tables["optimality"]:
        o, sl = r.get("opf"), r.get("slp", {})
        opf_cost = "not run (quick)" if o is None else \
            f"{_f(o.get('cost_eur_per_h'))} ({o.get('status')}, {o.get('iterations')} it)"
        o = o or {}
        rows.append([r["load_level"], r["request_mw"], r["milp_status"],
                     _f(r.get("milp_cost_eur_per_h")), r.get("milp_ac_feasible"),
                     f"{_f(sl.get('cost_eur_per_h'))} ({sl.get('status')}, "
                     f"{sl.get('iterations')} it)",
                     sl.get("ac_feasible"), opf_cost, o.get("ac_feasible", ""),
                     _f(r.get("cost_ratio"), 5),
                     _f(r["milp_time_s"], 2), _f(sl.get("time_s"), 2), _f(o.get("time_s"), 2)])
    md.append(_table(["load level", "P_E (MW)", "MILP", "MILP cost (EUR/h)", "MILP AC ok",
                      "SLP cost (EUR/h)", "SLP AC ok", "OPF cost (EUR/h)", "OPF AC ok",
                      "cost ratio", "MILP (s)", "SLP (s)", "OPF (s)"], rows))
    md += ["", "AC feasibility: no voltage beyond the limits by more than 1e-5 p.u., no "
               "loading by more than 1e-3 % (solver tolerances).", ""]
    return "\n".join(md)


# --------------------------------------------------------------------------- entry points
def evaluate(*, scenario=None, run_dir=None, out=None, quick: bool = False,
             options: EvalOptions | None = None) -> EvaluationResult:
    """Run every section and write the report folder (see module doc)."""
    from flexcore.runs import new_run_dir, versions, write_json

    options = options or (EvalOptions.quick() if quick else EvalOptions())
    if scenario is not None and run_dir is None and Path(scenario).is_dir():
        run_dir, scenario = scenario, None  # an existing run folder
    folder = new_run_dir("evaluate", out=out)
    fig_dir = folder / "figures"
    fig_dir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    _, bids, lin = setup(options)
    tables = {"quick": quick, "options": asdict(options)}
    tables["single_frame"] = single_frame(lin, bids, options, fig_dir)
    tables["linearisation"] = linearisation_study(lin, bids, options)
    tables["over_time"] = over_time(run_dir=run_dir, scenario=scenario, eval_dir=folder,
                                    quick=quick)
    tables["optimality"] = optimality(lin, bids, options)
    tables["time_s"] = time.perf_counter() - t0
    report = folder / "report.md"
    report.write_text(render(tables))
    write_json(folder / "tables.json", tables)
    write_json(folder / "versions.json", versions())
    return EvaluationResult(folder, report, tables)


def evaluate_cli(args) -> int:
    """``flexcosim evaluate [--scenario TOML|RUN_DIR] [--out DIR] [--quick]``."""
    scenario, quick = args.scenario, bool(args.quick)
    if scenario is None and not quick:  # the full report runs the shipped scenario
        scenario = str(Path(__file__).resolve().parent / "bergwald.toml")
    res = evaluate(scenario=scenario, out=args.out, quick=quick)
    t1 = res.tables["single_frame"]
    print(f"Table 1 after refinement: vm MAE {_e(t1['after_rounds']['vm_mae_pu'])} p.u., "
          f"loading MAE {_e(t1['after_rounds']['loading_mae_percent'])} %")
    print(f"report: {res.report}")
    return 0
