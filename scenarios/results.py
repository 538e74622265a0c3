"""Run-folder writing: an in-process mosaik Recorder and the final summary.

The Recorder collects every frame's outputs, appends one row per finished frame to
``timeseries/frames.csv`` (flushed, so a crash leaves the finished frames readable) and
writes the Parquet tables (``frames``, ``bids``, ``setpoints``, ``voltages``,
``loadings``, ``predictions`` and the ``all_active_*`` state of the DSO report):

* while running, in parts: every :data:`PART_FRAMES` finished frames or :data:`PART_S`
  seconds, ``timeseries/<table>/part-00000.parquet``, ``part-00001.parquet``, ... (written
  to a hidden temporary name and renamed, so a kill never leaves a broken part); after a
  kill ``pandas.read_parquet("timeseries/<table>")`` reads the finished parts as one table;
* at the normal end, one file per table, ``timeseries/<table>.parquet`` (the part folders
  are then removed).

Units that broke the plug-in contract (flagged and neutralised by FPUSim) and set-points
clipped to a unit's feasible range are listed in ``timeseries/unit_flags.csv`` (``frame,
unit_id, kind, reason``, ``kind`` = ``flagged`` | ``clipped``, appended and flushed every
frame); the frame's ``message`` names the flagged units. A dispatched frame whose AC
accuracy (voltage or loading MAE) ends above the scenario's tolerance (params
``tol_vm_mae_pu``, ``tol_loading_mae_percent``) gets ``above_tolerance = True`` and a
message; :func:`summarize` counts both.

Frames are those of the scenario's :class:`~flexcore.district.clock.FrameClock` (param
``clock``): each row carries ``frame``, ``day_type``, ``slot`` and a tz-aware ``timestamp``
(ISO 8601 with ``+01:00`` in the CSV files). Columns ending in ``_mw`` are frame means and
``cost_eur`` is EUR/h; :func:`summarize` turns them into MWh and EUR with ``clock.frame_h``.

Bids and set-points cross the co-simulation by per-run pseudonym (simulators.fpu_sim); the
Recorder gets the private map pseudonym -> unit (param ``bid_units``), writes it to
``dso/bid_pseudonyms.json`` and keeps ``unit_id`` in ``bids.parquet`` and the unit-level
``setpoints.parquet``, so results stay usable per unit.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import time as _time
import weakref
from pathlib import Path

import pandas as pd

from flexcore.district.clock import FrameClock
from flexcore.runs import write_json
from simulators import FrameSimulator, meta_from_table

FRAME_COLUMNS = (
    "frame", "day_type", "slot", "status", "dispatched", "request_mw", "delivered_mw", "cost_eur",
    "operating_point", "rounds", "relinearized", "fix_moved_mw", "points", "build_time_s",
    "solve_time_s", "dso_time_s",
    "vm_mae_pu", "vm_rmse_pu", "vm_max_err_pu", "loading_mae_percent", "loading_rmse_percent",
    "loading_max_err_percent", "ac_converged", "ac_violations", "ac_vm_min_pu", "ac_vm_max_pu",
    "ac_max_loading_percent", "p_slack_mw", "n_offers", "offered_up_mw", "offered_down_mw",
    "clipped_units", "flagged_units", "above_tolerance", "message", "wall_time_s", "timestamp",
)
#: dtypes of the frames table in the Parquet parts (the same schema in every part)
_FRAME_KINDS = {
    "frame": "Int64", "slot": "Int64", "rounds": "Int64", "points": "Int64",
    "ac_violations": "Int64", "n_offers": "Int64", "clipped_units": "Int64",
    "flagged_units": "Int64", "dispatched": "boolean", "relinearized": "boolean",
    "ac_converged": "boolean", "above_tolerance": "boolean", "day_type": "string",
    "status": "string", "operating_point": "string", "message": "string", "timestamp": None}
#: fixed dtypes of the other tables' parts (tables not listed: ``frame`` + float columns)
_TABLE_KINDS = {
    "bids": {"frame": "int64", "bid_id": "string", "unit_id": "string", "volume_mw": "float64",
             "price_eur_per_mwh": "float64", "activation_mw": "float64"},
    "setpoints": {"frame": "int64", "unit_id": "string", "setpoint_mw": "float64"},
    "predictions": {"frame": "int64", "key": "string", "kind": "string", "element": "string",
                    "index": "int64", "predicted": "float64", "ac": "float64"},
}
PART_FRAMES = 16   #: a Parquet part at least every this many finished frames ...
PART_S = 5.0       #: ... or this many seconds
UNIT_FLAG_COLUMNS = ("frame", "unit_id", "kind", "reason")
#: recorders of this process that have not finished (flushed on an interrupt or a crash)
_OPEN: weakref.WeakSet = weakref.WeakSet()
#: long format: one row per predicted row key of a dispatched frame (signed loadings)
PREDICTION_COLUMNS = ("frame", "key", "kind", "element", "index", "predicted", "ac")
ATTRS_IN = ("clearing", "report", "offers", "accuracy", "Vm[pu]", "loading[%]", "P_slack[MW]",
            "setpoint[MW]", "clipped", "flagged")
META = meta_from_table({"Recorder": {
    "public": True, "params": ["run_dir", "clock", "progress", "tol_vm_mae_pu",
                               "tol_loading_mae_percent", "bid_units"],
    "attrs": list(ATTRS_IN)}}, sim_type="event-based")
log = logging.getLogger("flexcosim.results")


class Recorder(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self._pending: dict[int, dict] = {}
        self.rows: list[dict] = []
        self.bids: list[dict] = []
        self.setpoints: list[dict] = []
        self.vm: list[dict] = []
        self.ld: list[dict] = []
        self.predictions: list[dict] = []
        self.all_active_vm: list[dict] = []
        self.all_active_ld: list[dict] = []
        self._keymap = None
        self._written: dict[str, int] = {}   # table -> rows already in parts
        self._parts: dict[str, int] = {}     # table -> parts written
        self._part_cols: dict[str, list[str]] = {}
        self._t_part = _time.perf_counter()

    def create(self, num, model, *, run_dir: str, clock: dict, progress: bool = False,
               tol_vm_mae_pu: float = math.inf, tol_loading_mae_percent: float = math.inf,
               bid_units: dict[str, dict] | None = None):
        self.run_dir = Path(run_dir)
        self._units = dict(bid_units or {})
        if self._units:
            write_json(self.run_dir / "dso" / "bid_pseudonyms.json", self._units)
        self.dir = self.run_dir / "timeseries"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock = FrameClock.of(clock)
        self.tol_vm_mae_pu = float(tol_vm_mae_pu)
        self.tol_loading_mae_percent = float(tol_loading_mae_percent)
        self._csv = (self.dir / "frames.csv").open("w", newline="")
        self._writer = csv.DictWriter(self._csv, FRAME_COLUMNS, extrasaction="ignore")
        self._writer.writeheader()
        self._csv.flush()
        self._flags_csv = (self.dir / "unit_flags.csv").open("w", newline="")
        self._flags = csv.writer(self._flags_csv)
        self._flags.writerow(UNIT_FLAG_COLUMNS)
        self._flags_csv.flush()
        _OPEN.add(self)
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.clock), unit="frame", desc="frames")
        self._t_last = _time.perf_counter()
        return [{"eid": "Recorder", "type": model}]

    def step(self, time, inputs, max_advance):
        for t in sorted(k for k in self._pending if k < time):
            self._flush(t)
        rec = self._pending.setdefault(time, {})
        for attr, values in inputs.get("Recorder", {}).items():
            for v in values.values():
                rec[attr] = v
        return None

    def _flush(self, time: int) -> None:
        rec = self._pending.pop(time)
        k = self.clock.index_at(time)
        frame = self.clock.frames[k]
        c, r, a = rec.get("clearing", {}), rec.get("report", {}), rec.get("accuracy", {})
        offers = rec.get("offers", [])
        act = c.get("activation_mw", {})
        now = _time.perf_counter()
        flagged, clipped = rec.get("flagged", {}), rec.get("clipped", {})
        above = self._above_tolerance(c, a)
        notes = [m for m in (c.get("message") or r.get("message", ""), above) if m]
        if flagged:
            shown = "; ".join(f"{u} ({why})" for u, why in sorted(flagged.items())[:3])
            more = f" and {len(flagged) - 3} more" if len(flagged) > 3 else ""
            notes.append(f"{len(flagged)} unit(s) flagged and kept at baseline: {shown}{more}")
        row = {"frame": k, "day_type": frame.day_type, "slot": frame.slot,
               "timestamp": frame.timestamp,
               **{x: c.get(x) for x in ("status", "dispatched", "request_mw", "delivered_mw",
                                         "cost_eur", "operating_point", "rounds",
                                         "build_time_s", "solve_time_s")},
               "message": "; ".join(notes), "above_tolerance": bool(above),
               **{x: r.get(x) for x in ("relinearized", "fix_moved_mw", "points", "dso_time_s")},
               **a, "p_slack_mw": rec.get("P_slack[MW]", math.nan), "n_offers": len(offers),
               "offered_up_mw": sum(o["volume_mw"] for o in offers if o["volume_mw"] > 0),
               "offered_down_mw": sum(o["volume_mw"] for o in offers if o["volume_mw"] < 0),
               "clipped_units": len(clipped), "flagged_units": len(flagged),
               "wall_time_s": now - self._t_last}
        self._t_last = now
        self.rows.append(row)
        self._writer.writerow(row | {"timestamp": frame.timestamp.isoformat()})
        self._csv.flush()
        for kind, units in (("flagged", flagged), ("clipped", clipped)):
            self._flags.writerows([k, u, kind, why] for u, why in sorted(units.items()))
        self._flags_csv.flush()
        unit = self._unit_of
        self.bids += [{"frame": k, "bid_id": o["bid_id"], "unit_id": unit(o["bid_id"]),
                       "volume_mw": o["volume_mw"], "price_eur_per_mwh": o["price_eur_per_mwh"],
                       "activation_mw": act.get(o["bid_id"], 0.0)} for o in offers]
        per_unit: dict[str, float] = {}  # the sum of each unit's bids, as FPUSim dispatches
        for b, x in rec.get("setpoint[MW]", {}).items():
            per_unit[unit(b)] = per_unit.get(unit(b), 0.0) + x
        self.setpoints += [{"frame": k, "unit_id": u, "setpoint_mw": x}
                           for u, x in per_unit.items()]
        vm, ld = rec.get("Vm[pu]", {}), rec.get("loading[%]", {})
        self.vm.append({"frame": k, **vm})
        self.ld.append({"frame": k, **ld})
        # format 2: the TSO's clearing has no predictions, the DSO report carries its own
        pv = c.get("predicted_vm_pu") or r.get("predicted_vm_pu") or {}
        pl = c.get("predicted_loading_percent") or r.get("predicted_loading_percent") or {}
        if c.get("dispatched") and (pv or pl):
            self.predictions += self._prediction_rows(k, pv, pl, vm, ld)
        aa = r.get("all_active")
        if aa:  # AC state with every bid in the request's direction active (DSO report)
            self.all_active_vm.append({"frame": k, **aa.get("Vm[pu]", {})})
            self.all_active_ld.append({"frame": k, **aa.get("loading[%]", {})})
        if self._bar is not None:
            self._bar.update(1)
        since = len(self.rows) - self._written.get("frames", 0)
        if since >= PART_FRAMES or (since and _time.perf_counter() - self._t_part >= PART_S):
            self.write_parts()

    def _above_tolerance(self, c: dict, a: dict) -> str:
        """Message if a dispatched frame's AC accuracy ends above the tolerance, else ""."""
        if not c.get("dispatched"):
            return ""
        out = []
        for col, tol, unit in (("vm_mae_pu", self.tol_vm_mae_pu, "p.u."),
                               ("loading_mae_percent", self.tol_loading_mae_percent, "%")):
            x = a.get(col)
            if x is not None and math.isfinite(float(x)) and float(x) > tol:
                out.append(f"{col.rsplit('_', 1)[0].replace('_', ' ')} {float(x):.2e} {unit} > "
                           f"tolerance {tol:.2e}")
        return ("dispatched above the accuracy tolerance: " + ", ".join(out)) if out else ""

    def _tables(self) -> dict[str, list[dict]]:
        return {"frames": self.rows, "bids": self.bids, "setpoints": self.setpoints,
                "voltages": self.vm, "loadings": self.ld, "predictions": self.predictions,
                "all_active_voltages": self.all_active_vm,
                "all_active_loadings": self.all_active_ld}

    def _typed(self, name: str, rows: list[dict]) -> pd.DataFrame:
        """The rows as a DataFrame with the same columns and dtypes in every part."""
        df = pd.DataFrame(rows)
        if name == "frames":
            df = df.reindex(columns=list(FRAME_COLUMNS))
            kinds = {c: _FRAME_KINDS.get(c, "float64") for c in FRAME_COLUMNS}
        elif name in _TABLE_KINDS:
            kinds = _TABLE_KINDS[name]
            df = df.reindex(columns=list(kinds))
        else:
            cols = self._part_cols.setdefault(name, ["frame"] + sorted(
                (c for c in df.columns if c != "frame"), key=str))
            df = df.reindex(columns=cols)
            kinds = {c: "int64" if c == "frame" else "float64" for c in cols}
        return df.astype({c: k for c, k in kinds.items() if k is not None})

    def write_parts(self) -> None:
        """Write the finished frames not yet in a part (every table), atomically."""
        for name, rows in self._tables().items():
            start = self._written.get(name, 0)
            if len(rows) <= start:
                continue
            folder = self.dir / name
            folder.mkdir(exist_ok=True)
            n = self._parts.get(name, 0)
            tmp = folder / f".part-{n:05d}.parquet.tmp"   # hidden: datasets skip it
            self._typed(name, rows[start:]).to_parquet(tmp, index=False)
            os.replace(tmp, folder / f"part-{n:05d}.parquet")
            self._parts[name], self._written[name] = n + 1, len(rows)
        self._t_part = _time.perf_counter()

    def close_on_error(self) -> None:
        """After an interrupt or a crash: finished frames into parts, files closed; the
        ``finalize`` that mosaik's shutdown calls next then writes nothing."""
        _OPEN.discard(self)
        self._closed = True
        self.write_parts()
        self._csv.close()
        self._flags_csv.close()
        if self._bar is not None:
            self._bar.close()

    def _unit_of(self, bid: str) -> str:
        """The unit behind a bid pseudonym (the pseudonym itself without a map)."""
        entry = self._units.get(bid)
        return str(entry["unit_id"]) if entry else bid

    def _prediction_rows(self, k: int, pv: dict, pl: dict, vm: dict, ld: dict) -> list[dict]:
        """The TSO's predictions next to the AC result, keys mapped through the DSO's
        KeyMap (``dso/KEYMAP.json``, written at the DSO agent's create, loaded once here)."""
        if self._keymap is None:
            from flexcore.dso.linearizer import KeyMap

            self._keymap = KeyMap.load(self.run_dir / "dso" / "KEYMAP.json")
        km, nan = self._keymap, math.nan
        rows = []
        for key, x in pv.items():
            b = km.vm_pu[key]
            rows.append({"frame": k, "key": key, "kind": "vm_pu", "element": "bus", "index": b,
                         "predicted": x, "ac": vm.get(str(b), nan)})
        for key, x in pl.items():
            e, i = km.loading_percent[key]
            rows.append({"frame": k, "key": key, "kind": "loading_percent", "element": e,
                         "index": i, "predicted": x, "ac": ld.get(f"{e}:{i}", nan)})
        return rows

    def finalize(self) -> None:
        if getattr(self, "_closed", False):
            return
        _OPEN.discard(self)
        for t in sorted(self._pending):
            self._flush(t)
        self._csv.close()
        self._flags_csv.close()
        if self._bar is not None:
            self._bar.close()
        frames = pd.DataFrame(self.rows, columns=list(FRAME_COLUMNS))
        frames.to_parquet(self.dir / "frames.parquet", index=False)
        pd.DataFrame(self.bids).to_parquet(self.dir / "bids.parquet", index=False)
        pd.DataFrame(self.setpoints, columns=["frame", "unit_id", "setpoint_mw"]).to_parquet(
            self.dir / "setpoints.parquet", index=False)
        pd.DataFrame(self.vm).to_parquet(self.dir / "voltages.parquet", index=False)
        pd.DataFrame(self.ld).to_parquet(self.dir / "loadings.parquet", index=False)
        pred = pd.DataFrame(self.predictions, columns=list(PREDICTION_COLUMNS))
        pred = pred.astype({"frame": "int64", "index": "int64", "predicted": "float64",
                            "ac": "float64"})
        pred.to_parquet(self.dir / "predictions.parquet", index=False)
        for name, rows in (("voltages", self.all_active_vm), ("loadings", self.all_active_ld)):
            df = pd.DataFrame(rows) if rows else pd.DataFrame({"frame": pd.Series(dtype="int64")})
            df.to_parquet(self.dir / f"all_active_{name}.parquet", index=False)
        for name in self._tables():  # the whole tables are written: parts no longer needed
            shutil.rmtree(self.dir / name, ignore_errors=True)


def close_open_recorders() -> None:
    """Write the finished frames of every unfinished Recorder of this process into Parquet
    parts (the runner calls it when a run is interrupted or crashes)."""
    for rec in list(_OPEN):
        rec.close_on_error()


# --------------------------------------------------------------------------- summary
def summarize(frames: pd.DataFrame, *, wall_time_s: float, frame_h: float,
              unit_flags: pd.DataFrame | None = None) -> dict:
    """Run summary: energy, cost, statuses and accuracy statistics (median/p95/max).

    ``frame_h`` is the clock's frame length in hours (``FrameClock.frame_h``): energy in
    MWh = sum of frame-mean MW x ``frame_h``, cost in EUR = sum of EUR/h x ``frame_h``.
    ``unit_flags``: the run's ``timeseries/unit_flags.csv`` (flagged and clipped units)."""
    ok = frames["status"] == "optimal"
    req = frames["request_mw"].astype(float)
    dlv = frames["delivered_mw"].astype(float).fillna(0.0)

    def stats(col: str) -> dict:
        x = frames.loc[ok, col].astype(float).dropna()
        if x.empty:
            return {"median": math.nan, "p95": math.nan, "max": math.nan}
        return {"median": float(x.median()), "p95": float(x.quantile(0.95)), "max": float(x.max())}

    def count(col: str) -> int:
        return int(sum(bool(x) for x in frames[col] if pd.notna(x))) if col in frames else 0

    flags = unit_flags if unit_flags is not None else pd.DataFrame(
        columns=list(UNIT_FLAG_COLUMNS))
    flagged = flags[flags["kind"] == "flagged"]
    first = flagged.drop_duplicates("unit_id")
    return {
        "frames": int(len(frames)),
        "frames_cleared_optimal": int(ok.sum()),
        "frames_with_request": int((frames["request_mw"].abs() > 0).sum()),
        "infeasible_frames": int((frames["status"] == "infeasible").sum()),
        "unsafe_frames": int((frames["status"] == "unsafe").sum()),
        "nonconverged_ac_frames": int((~frames["ac_converged"].astype(bool)).sum()),
        "ac_violation_frames": int((frames["ac_violations"].fillna(0) > 0).sum()),
        # per direction: a signed sum would let upward and downward energy cancel
        "requested_up_mwh": float(req.clip(lower=0).sum() * frame_h),
        "requested_down_mwh": float(req.clip(upper=0).abs().sum() * frame_h),
        "delivered_up_mwh": float(dlv.clip(lower=0).sum() * frame_h),
        "delivered_down_mwh": float(dlv.clip(upper=0).abs().sum() * frame_h),
        "cost_eur": float(frames["cost_eur"].fillna(0).sum() * frame_h),
        "vm_mae_pu": stats("vm_mae_pu"),
        "loading_mae_percent": stats("loading_mae_percent"),
        "frames_above_tolerance": count("above_tolerance"),
        "flagged_units": int(first["unit_id"].nunique()),
        "flagged_unit_frames": int(len(flagged)),
        "flagged_frames": count("flagged_units"),
        "flagged_examples": [f"{u} ({why})" for u, why in
                             zip(first["unit_id"][:3], first["reason"][:3])],
        "clipped_units": int(flags.loc[flags["kind"] == "clipped", "unit_id"].nunique()),
        "clipped_unit_frames": int((flags["kind"] == "clipped").sum()),
        "wall_time_s": float(wall_time_s),
        "frames_per_s": float(len(frames) / wall_time_s) if wall_time_s > 0 else math.nan,
    }


def summary_text(s: dict) -> str:
    rows = [
        ("frames (optimal / with request)",
         f"{s['frames']} ({s['frames_cleared_optimal']} / {s['frames_with_request']})"),
        ("requested / delivered upward", f"{s['requested_up_mwh']:.3f} / "
                                          f"{s['delivered_up_mwh']:.3f} MWh"),
        ("requested / delivered downward", f"{s['requested_down_mwh']:.3f} / "
                                            f"{s['delivered_down_mwh']:.3f} MWh"),
        ("cost", f"{s['cost_eur']:.2f} EUR"),
        ("infeasible / unsafe / AC not converged",
         f"{s['infeasible_frames']} / {s['unsafe_frames']} / {s['nonconverged_ac_frames']}"),
        ("frames with AC limit violations", str(s["ac_violation_frames"])),
        ("voltage MAE p.u. median/p95/max",
         "{median:.2e} / {p95:.2e} / {max:.2e}".format(**s["vm_mae_pu"])),
        ("loading MAE % median/p95/max",
         "{median:.2e} / {p95:.2e} / {max:.2e}".format(**s["loading_mae_percent"])),
        ("frames dispatched above accuracy tol.", str(s.get("frames_above_tolerance", 0))),
        ("units flagged (contract) / frames", f"{s.get('flagged_units', 0)} / "
                                              f"{s.get('flagged_frames', 0)}"),
        ("units clipped / unit-frames", f"{s.get('clipped_units', 0)} / "
                                        f"{s.get('clipped_unit_frames', 0)}"),
        ("wall time", f"{s['wall_time_s']:.1f} s ({s['frames_per_s']:.2f} frames/s)"),
    ]
    rows[-1:-1] = [("  flagged", x) for x in s.get("flagged_examples", [])]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def write_summary(run_dir: Path, frames: pd.DataFrame, summary: dict) -> None:
    frames.assign(timestamp=[t.isoformat() for t in frames["timestamp"]]).to_csv(
        run_dir / "frames.csv", index=False)
    flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    for k in ("vm_mae_pu", "loading_mae_percent"):
        for q, x in summary[k].items():
            flat[f"{k}_{q}"] = x
    pd.DataFrame([flat]).to_csv(run_dir / "summary.csv", index=False)
    write_json(run_dir / "summary.json", summary)


def write_plots(run_dir: Path, frames: pd.DataFrame, cfg) -> list[Path]:
    """The run's figures in ``plots/``; returns the paths written.

    * ``over_time.png``: request and delivered power, voltage / loading MAE and cost per frame;
    * ``grid_max_loading.png``, ``grid_largest_request.png``: the AC grid state at the frame
      with the highest branch loading and at the dispatched frame with the largest request;
    * the single-frame figures of the source at the critical frame (:func:`critical_frame`):
      ``fig5_all_active.png`` (every bid in the request's direction fully activated, from
      the DSO report's ``all_active``; skipped with a log line if that frame has none),
      ``fig6_after_clearing.png`` (AC state after clearing, same colour scale as Figure 5),
      ``fig7_pf_vs_prediction_vm.png`` and ``fig8_pf_vs_prediction_loading.png`` (TSO
      prediction vs AC power flow at the critical buses and branches; need a dispatched frame).

    ``flexcosim evaluate`` draws Figures 5-8 for its stand-alone single-frame study as well."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    paths = []
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(frames["frame"], frames["request_mw"], label="request")
    axes[0].plot(frames["frame"], frames["delivered_mw"], label="delivered")
    axes[0].set_ylabel("MW")
    axes[0].legend()
    axes[1].semilogy(frames["frame"], frames["vm_mae_pu"], ".", label="voltage MAE (p.u.)")
    axes[1].semilogy(frames["frame"], frames["loading_mae_percent"], ".", label="loading MAE (%)")
    axes[1].legend()
    axes[2].plot(frames["frame"], frames["cost_eur"], ".")
    axes[2].set_ylabel("cost (EUR/h)")
    axes[2].set_xlabel("frame")
    fig.tight_layout()
    paths.append(out / "over_time.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return (paths + grid_state_plots(run_dir, frames, grid=cfg.grid)
            + critical_frame_plots(run_dir, frames, cfg))


def _set_state(net, vm: pd.Series, ld: pd.Series) -> None:
    """Put a stored AC state (a row of voltages / signed loadings, keyed like the GridSim
    outputs) into ``net.res_*`` for :func:`flexcore.plotting.plot_grid` (magnitudes)."""
    vm, ld = vm.astype(float), ld.astype(float).abs()
    net.res_bus = pd.DataFrame({"vm_pu": vm.reindex([str(b) for b in net.bus.index]).to_numpy()},
                               index=net.bus.index)
    for e in ("line", "trafo"):
        idx = net[e].index
        net[f"res_{e}"] = pd.DataFrame(
            {"loading_percent": ld.reindex([f"{e}:{i}" for i in idx]).to_numpy()}, index=idx)


def grid_state_plots(run_dir: Path, frames: pd.DataFrame, *, grid: str) -> list[Path]:
    """The grid's AC state (from the stored time series) at the frame with the highest
    branch loading and at the dispatched frame with the largest request (Figure 6 style)."""
    from flexcore.grid.grids import load_grid
    from flexcore.study.plotting import plot_grid

    ts = Path(run_dir) / "timeseries"
    vm = pd.read_parquet(ts / "voltages.parquet").set_index("frame")
    ld = pd.read_parquet(ts / "loadings.parquet").set_index("frame")
    net = load_grid(grid)
    picks = {}
    if len(ld):
        picks["max_loading"] = int(ld.abs().max(axis=1).idxmax())
    done = frames[frames["dispatched"].eq(True) & (frames["request_mw"].abs() > 0)]
    if len(done):
        picks["largest_request"] = int(done.loc[done["request_mw"].abs().idxmax(), "frame"])
    paths = []
    for name, frame in picks.items():
        if frame not in vm.index or frame not in ld.index:
            continue
        row = frames.loc[frames["frame"] == frame].iloc[0]
        _set_state(net, vm.loc[frame], ld.loc[frame])
        title = (f"frame {frame} ({row['day_type']}, slot {row['slot']}): request "
                 f"{row['request_mw']:g} MW, {row['status']}")
        paths.append(plot_grid(net, Path(run_dir) / "plots" / f"grid_{name}.png", title=title))
    return paths


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def critical_frame(frames: pd.DataFrame) -> int | None:
    """The dispatched frame with the largest |request|; without one, the frame with the
    largest |request| whatever its status; None if no frame has a request."""
    req = frames["request_mw"].astype(float).abs()
    pool = frames[(req > 0) & frames["dispatched"].eq(True)]
    if pool.empty:
        pool = frames[req > 0]
    if pool.empty:
        return None
    return int(pool.loc[pool["request_mw"].astype(float).abs().idxmax(), "frame"])


def critical_frame_plots(run_dir: Path, frames: pd.DataFrame, cfg, *, n: int = 20
                         ) -> list[Path]:
    """Figures 5-8 of the source at :func:`critical_frame` (see :func:`write_plots`).

    Figure 7 shows the ``n`` predicted buses closest to a voltage limit in AC, Figure 8 the
    ``n`` most loaded predicted branches (magnitudes, as the Validator compares them); both
    with the error per element in a lower panel."""
    import numpy as np

    from flexcore.grid.grids import load_grid
    from flexcore.study.plotting import plot_grid, plot_pf_vs_prediction

    run_dir = Path(run_dir)
    ts, out = run_dir / "timeseries", run_dir / "plots"
    frame = critical_frame(frames)
    if frame is None:
        log.warning("Figures 5-8 skipped: no frame has a balancing request")
        return []
    row = frames.loc[frames["frame"] == frame].iloc[0]
    minutes = int(row["slot"]) * int(cfg.resolution_min)
    where = (f"frame {frame}: {row['day_type']}, slot {row['slot']} "
             f"({minutes // 60:02d}:{minutes % 60:02d}), request {_num(row['request_mw'])} MW")
    lim = cfg.dso.limits
    paths = []

    def read(name: str) -> pd.DataFrame | None:
        path = ts / name
        return pd.read_parquet(path).set_index("frame") if path.is_file() else None

    net = load_grid(cfg.grid)
    states = {"fig5_all_active": ("Figure 5: all flexibility active", "all_active_voltages.parquet",
                                  "all_active_loadings.parquet"),
              "fig6_after_clearing": (f"Figure 6: after clearing ({row['status']}, delivered "
                                      f"{_num(row['delivered_mw'])} MW)", "voltages.parquet",
                                      "loadings.parquet")}
    for name, (head, f_vm, f_ld) in states.items():
        vm, ld = read(f_vm), read(f_ld)
        if vm is None or ld is None or frame not in vm.index or frame not in ld.index:
            why = (f"{f_vm} / {f_ld} missing" if vm is None or ld is None
                   else f"no stored AC state for frame {frame} in {f_vm}" if len(vm)
                   else f"no frame's DSO report carries 'all_active' ({f_vm} is empty)")
            log.warning("%s.png skipped: %s", name, why)
            continue
        v, lp = vm.loc[frame].astype(float), ld.loc[frame].astype(float)
        title = (f"{head}\n{where}\nmax loading {lp.abs().max():.1f} %, "
                 f"voltage {v.min():.4f}-{v.max():.4f} p.u.")
        _set_state(net, v, lp)
        paths.append(plot_grid(net, out / f"{name}.png", title=title,
                               limit_percent=lim["loading_max_percent"],
                               vm_limits=(lim["vm_min_pu"], lim["vm_max_pu"])))
    path = ts / "predictions.parquet"
    pred = pd.read_parquet(path) if path.is_file() else None
    pred = None if pred is None else pred[pred["frame"] == frame]
    if pred is None or pred.empty:
        log.warning("Figures 7/8 skipped: %s", "predictions.parquet missing" if pred is None
                    else f"no predictions for frame {frame} (not dispatched)")
        return paths
    v = pred[(pred["kind"] == "vm_pu") & pred["ac"].notna()]
    if len(v):
        margin = np.minimum(v["ac"] - lim["vm_min_pu"], lim["vm_max_pu"] - v["ac"]).to_numpy()
        sel = v.iloc[np.argsort(margin, kind="stable")[:n]]
        near = [x for x in (lim["vm_min_pu"], lim["vm_max_pu"])
                if (sel["ac"] - x).abs().min() < 0.02]  # limit lines only where they are near
        mae = (v["predicted"] - v["ac"]).abs().mean()
        paths.append(plot_pf_vs_prediction(
            [f"bus {i}" for i in sel["index"]], sel["ac"], sel["predicted"],
            out / "fig7_pf_vs_prediction_vm.png", ylabel="voltage (p.u.)", limits=near,
            errors=True,
            title=(f"Figure 7: TSO estimate vs AC, {len(sel)} buses closest to a voltage limit\n"
                   f"{where}; MAE over {len(v)} predicted buses {mae:.2e} p.u.")))
    b = pred[(pred["kind"] == "loading_percent") & pred["ac"].notna()]
    if len(b):
        ac, pr = b["ac"].abs(), b["predicted"].abs()
        order = np.argsort(-ac.to_numpy(), kind="stable")[:n]
        sel = b.iloc[order]
        mae = (pr - ac).abs().mean()
        paths.append(plot_pf_vs_prediction(
            [f"{e} {i}" for e, i in zip(sel["element"], sel["index"])], ac.iloc[order],
            pr.iloc[order], out / "fig8_pf_vs_prediction_loading.png", ylabel="loading (%)",
            limits=(lim["loading_max_percent"],), errors=True,
            title=(f"Figure 8: TSO estimate vs AC, {len(sel)} most loaded branches "
                   f"(magnitudes)\n{where}; MAE over {len(b)} predicted branches "
                   f"{mae:.2e} %")))
    return paths
