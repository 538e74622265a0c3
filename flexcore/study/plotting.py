"""Grid plots (the analogue of the source's Figures 3, 5 and 6), comparison plots (Figures 7
and 8) and the run's frames over clock time."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

# a non-interactive backend: plots are written to files, also on machines without a screen
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure


def bus_xy(net) -> np.ndarray:
    """(n_bus, 2) coordinates from pandapower's GeoJSON ``bus.geo`` column (NaN if absent)."""
    xy = np.full((len(net.bus), 2), np.nan)
    if "geo" not in net.bus.columns:
        return xy
    for k, geo in enumerate(net.bus["geo"].to_numpy()):
        if isinstance(geo, str) and geo:
            coords = json.loads(geo).get("coordinates")
            if coords:
                xy[k] = coords[:2]
    return xy


def coordinates_are_degrees(xy: np.ndarray) -> bool:
    """True for longitude / latitude (SimBench's GeoJSON): every point within +-180 / +-90
    and the whole grid within 1 degree; metres otherwise (a real LV grid spans > 1 m)."""
    ok = xy[np.isfinite(xy).all(axis=1)]
    if not len(ok):
        return False
    span = ok.max(axis=0) - ok.min(axis=0)
    return bool((np.abs(ok[:, 0]) <= 180).all() and (np.abs(ok[:, 1]) <= 90).all()
                and (span <= 1.0).all())


def _values(values, index, default: pd.Series) -> np.ndarray:
    """``values`` in the order of ``index``: a Series or mapping keyed by element index, or
    an array in the order of ``index`` itself; ``default`` (a ``res_*`` column) if None."""
    if values is None:
        return default.reindex(index).to_numpy(float)
    if isinstance(values, pd.Series):
        return values.reindex(index).to_numpy(float)
    if hasattr(values, "keys"):
        return pd.Series(dict(values), dtype=float).reindex(index).to_numpy(float)
    arr = np.asarray(values, float)
    if arr.shape != (len(index),):
        raise ValueError(f"{arr.shape[0] if arr.ndim else 0} values for {len(index)} elements")
    return arr


def plot_grid(net, path: str | Path, *, title: str = "", color_by: str = "both",
              limit_percent: float = 100.0, vm_limits=(0.95, 1.05), vm_pu=None,
              line_loading_percent=None, trafo_loading_percent=None) -> Path:
    """:func:`grid_figure` written as a PNG to ``path``."""
    return save_figure(grid_figure(
        net, title=title, color_by=color_by, limit_percent=limit_percent, vm_limits=vm_limits,
        vm_pu=vm_pu, line_loading_percent=line_loading_percent,
        trafo_loading_percent=trafo_loading_percent), path)


def grid_figure(net, *, title: str = "", color_by: str = "both", limit_percent: float = 100.0,
                vm_limits=(0.95, 1.05), vm_pu=None, line_loading_percent=None,
                trafo_loading_percent=None) -> Figure:
    """The grid's AC state as a map (a matplotlib Figure).

    ``color_by="both"`` (default): LV lines shaded by loading magnitude (grey to black up
    to ``limit_percent``, thicker and orange above it) and buses coloured by voltage
    (blue-white-red over ``vm_limits``, ringed when outside), each with its colour bar;
    ``"loading"`` or ``"voltage"`` draws one of the two. Transformers are black squares
    labelled with their loading. The state is ``vm_pu`` (per bus index),
    ``line_loading_percent`` / ``trafo_loading_percent`` (per line / trafo index; signed
    values are plotted as magnitudes) where given, else ``net.res_bus`` / ``res_line`` /
    ``res_trafo`` (a converged power flow). Coordinates in degrees (SimBench) are labelled
    longitude / latitude (:func:`coordinates_are_degrees`), else x / y in metres.
    """
    if color_by not in ("both", "loading", "voltage"):
        raise ValueError(f"color_by must be 'both', 'loading' or 'voltage', not {color_by!r}")
    xy = bus_xy(net)
    pos = {b: k for k, b in enumerate(net.bus.index)}
    if np.isnan(xy).all():
        raise ValueError("the grid has no bus coordinates to plot")
    vm = _values(vm_pu, net.bus.index, _res(net, "bus", "vm_pu"))
    line_ld = np.abs(_values(line_loading_percent, net.line.index,
                             _res(net, "line", "loading_percent")))
    trafo_ld = np.abs(_values(trafo_loading_percent, net.trafo.index,
                              _res(net, "trafo", "loading_percent")))
    fig, ax = plt.subplots(figsize=(11, 7.5))
    lv = (net.bus.vn_kv.loc[net.line.from_bus].to_numpy() < 1.0)  # MV feeders drawn apart
    segs_all = np.array([[xy[pos[f]], xy[pos[t]]] for f, t in
                         zip(net.line.from_bus, net.line.to_bus)]).reshape(-1, 2, 2)
    if (~lv).any():
        ax.add_collection(LineCollection(segs_all[~lv], colors="0.7", linewidths=0.8,
                                         linestyles="--"))
    segs, loading = segs_all[lv], line_ld[lv]
    width = 1.2 + net.line.parallel.to_numpy()[lv]
    if color_by in ("both", "loading"):
        cmap = ListedColormap(plt.get_cmap("Greys")(np.linspace(0.3, 1.0, 256)))
        lc = LineCollection(segs, cmap=cmap, linewidths=width)
        lc.set_array(np.clip(np.nan_to_num(loading), 0, limit_percent))
        lc.set_clim(0, limit_percent)
        ax.add_collection(lc)
        over = loading > limit_percent + 1e-9
        if over.any():
            ax.add_collection(LineCollection(segs[over], colors="tab:orange", linewidths=3.5,
                                             label=f"line loading > {limit_percent:g} %"))
    else:
        ax.add_collection(LineCollection(segs, colors="0.6", linewidths=1.0))
    if color_by in ("both", "voltage"):
        # inside the limits: circles; above / below: triangles up / down (same colours)
        hi, lo = vm > vm_limits[1] + 1e-9, vm < vm_limits[0] - 1e-9
        style = dict(c=None, cmap="coolwarm", vmin=vm_limits[0], vmax=vm_limits[1],
                     zorder=3, edgecolors="none")
        sc = None
        for mask, marker, size, label in (
                (~hi & ~lo, "o", 12, None),
                (hi, "^", 26, f"bus voltage > {vm_limits[1]:g} p.u."),
                (lo, "v", 26, f"bus voltage < {vm_limits[0]:g} p.u.")):
            if mask.any() or sc is None:
                art = ax.scatter(xy[mask, 0], xy[mask, 1], **{**style, "c": vm[mask]},
                                 marker=marker, s=size, label=label if mask.any() else None)
                sc = sc or art
        # the first colour bar ends up outermost: leave room for the inner one's label
        fig.colorbar(sc, ax=ax, label="bus voltage (p.u.)", extend="both", fraction=0.04,
                     pad=0.1 if color_by == "both" else 0.01)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=3, c="0.4", zorder=3)
    if color_by in ("both", "loading"):
        fig.colorbar(lc, ax=ax, label="line loading (%)", fraction=0.04, pad=0.01)
    for k, lv_bus in enumerate(net.trafo.lv_bus):
        ax.plot(*xy[pos[lv_bus]], marker="s", ms=11, color="black", zorder=5)
        tl = trafo_ld[k] if k < len(trafo_ld) else np.nan
        ax.annotate(f"T{k + 1} {tl:.0f} %", xy[pos[lv_bus]], xytext=(9, 9),
                    textcoords="offset points", fontsize=8,
                    color="tab:orange" if tl > limit_percent else "black")
    ax.autoscale()
    if coordinates_are_degrees(xy):
        lat = float(np.nanmean(xy[:, 1]))
        # equal distances in both directions
        ax.set_aspect(1.0 / np.cos(np.radians(lat)), adjustable="datalim")
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        ax.ticklabel_format(useOffset=False)
    else:
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    ax.set_title(title or str(net.name))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def _res(net, element: str, column: str) -> pd.Series:
    table = net[f"res_{element}"] if f"res_{element}" in net else None
    if table is None or column not in table:
        return pd.Series(np.nan, index=net[element].index, dtype=float)
    return table[column].astype(float)


def unit_of(label: str) -> str:
    """The unit in an axis label's last parentheses: ``"voltage (p.u.)"`` -> ``"p.u."``."""
    m = re.search(r"\(([^()]*)\)\s*$", label)
    return m.group(1) if m else ""


def plot_pf_vs_prediction(keys, pf, predicted, path: str | Path, *, ylabel: str, title: str,
                          limits=None, errors: bool = False, error_unit: str | None = None
                          ) -> Path:
    """:func:`pf_vs_prediction_figure` written as a PNG to ``path``."""
    return save_figure(pf_vs_prediction_figure(keys, pf, predicted, ylabel=ylabel, title=title,
                                               limits=limits, errors=errors,
                                               error_unit=error_unit), path)


def pf_vs_prediction_figure(keys, pf, predicted, *, ylabel: str, title: str, limits=None,
                            errors: bool = False, error_unit: str | None = None) -> Figure:
    """Bar/line comparison of AC power flow and MILP prediction at critical elements (Fig. 7/8).

    ``errors=True`` adds a lower panel with the error (prediction - AC) per element, which
    stays readable when the two markers coincide on the upper panel's scale; its axis is in
    ``error_unit`` (default: the unit in ``ylabel``'s parentheses, e.g. ``"p.u."``)."""
    pf, predicted = np.asarray(pf, float), np.asarray(predicted, float)
    if errors:
        fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                         gridspec_kw={"height_ratios": (2, 1)})
    else:
        fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(keys))
    ax.plot(x, pf, "o", label="AC power flow", ms=7, mfc="none")
    ax.plot(x, predicted, "x", label="MILP estimate", ms=7)
    for lim in limits or ():
        ax.axhline(lim, color="red", ls="--", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(axis="y", useOffset=False)  # 1.0498, not "-0.0002 + 1.05"
    ax.set_title(title)
    ax.legend()
    bottom = ax
    if errors:
        unit = unit_of(ylabel) if error_unit is None else error_unit
        ax_err.bar(x, predicted - pf, color="tab:orange")
        ax_err.axhline(0.0, color="0.3", lw=0.6)
        ax_err.set_ylabel(f"estimate - AC ({unit})" if unit else "estimate - AC")
        ax_err.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        bottom = ax_err
    bottom.set_xticks(x, keys, rotation=90, fontsize=7)
    return fig


#: the over-time panels: (label, columns tried in order, limit lines or None, scale)
OVER_TIME_PANELS = (
    ("voltage min / max (p.u.)", (("vm_min_pu", "ac_vm_min_pu"), ("vm_max_pu", "ac_vm_max_pu")),
     "vm", "linear"),
    ("highest branch loading (%)", (("loading_max_percent", "ac_max_loading_percent"),),
     "loading", "linear"),
    ("voltage MAE (p.u.)", (("vm_mae_pu",),), None, "symlog"),
    ("loading MAE (%)", (("loading_mae_percent",),), None, "symlog"),
    ("cost (EUR/h)", (("cost_eur_per_h", "cost_eur"),), None, "linear"),
)


def time_of_day(timestamps) -> np.ndarray:
    """Matplotlib date numbers of the clock time within the day (all on one reference
    day), so that frames of different days share a 00:00-24:00 axis."""
    ts = pd.DatetimeIndex(pd.to_datetime(pd.Series(timestamps)))
    minutes = ts.hour * 60 + ts.minute + ts.second / 60.0
    ref = pd.Timestamp("2000-01-01")
    return mdates.date2num((ref + pd.to_timedelta(np.asarray(minutes), unit="min"))
                           .to_pydatetime())


def _gaps_broken(x: np.ndarray, y: np.ndarray, max_gap: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` (sorted by x) with a NaN point inserted where consecutive x are more
    than ``max_gap`` apart (missing frames), so that lines are not drawn across the gap."""
    cut = np.flatnonzero(np.diff(x) > max_gap) + 1
    return np.insert(x, cut, np.nan), np.insert(y, cut, np.nan)


def _pick(frames: pd.DataFrame, names) -> str | None:
    return next((n for n in names if n in frames.columns), None)


def _symlog(ax, values: np.ndarray) -> None:
    """A symmetric-log axis whose linear part ends at the smallest positive value: exact
    zeros (a frame reproduced exactly) stay visible at 0 instead of dropping out."""
    pos = values[np.isfinite(values) & (values > 0)]
    ax.set_yscale("symlog", linthresh=float(pos.min()) if len(pos) else 1e-12, linscale=0.3)
    ax.set_ylim(bottom=0.0)


def plot_over_time(frames: pd.DataFrame, path: str | Path, *, limits=None,
                   title: str = "") -> Path:
    """:func:`over_time_figure` written as a PNG to ``path``."""
    return save_figure(over_time_figure(frames, limits=limits, title=title), path)


def over_time_figure(frames: pd.DataFrame, *, limits=None, title: str = "") -> Figure:
    """The run's frames on a clock-time axis (time of day, CET = UTC+01:00; one colour
    per day type, or per day type and date when a day type has several dates).

    Panels: requested (line) and delivered (dots) balancing power in MW; then, where the
    frames table has the columns, the AC voltage range (``vm_min_pu`` / ``vm_max_pu``, or
    ``ac_vm_*``), the highest branch loading (``loading_max_percent`` or
    ``ac_max_loading_percent``), the voltage and loading MAE of the estimates (symmetric-log
    axes that keep exact zeros) and the cost (``cost_eur_per_h``, or ``cost_eur`` of older
    tables; EUR/h). ``limits``: ``{"vm_min_pu", "vm_max_pu", "loading_max_percent"}`` for
    the limit lines (default 0.95 / 1.05 p.u., 100 %). Needs ``timestamp`` (or ``slot``
    with 15-minute frames) and ``day_type``."""
    lim = {"vm_min_pu": 0.95, "vm_max_pu": 1.05, "loading_max_percent": 100.0,
           **dict(limits or {})}
    frames = frames.reset_index(drop=True)
    if "timestamp" in frames:
        stamps = pd.to_datetime(frames["timestamp"])
    else:  # slots of 15 min on a reference day
        stamps = pd.Timestamp("2000-01-01") + pd.to_timedelta(frames["slot"] * 15, unit="min")
    x = time_of_day(stamps)
    day = pd.DatetimeIndex(stamps).date
    day_type = frames["day_type"].astype(str) if "day_type" in frames else pd.Series(
        "run", index=frames.index)
    several = pd.DataFrame({"t": day_type, "d": day}).groupby("t")["d"].nunique().gt(1)
    keys = [f"{t} {d}" if several[t] else t for t, d in zip(day_type, day)]
    groups = list(dict.fromkeys(keys))
    colors = plt.get_cmap("tab10")
    panels = [(label, [_pick(frames, c) for c in cols], kind, scale)
              for label, cols, kind, scale in OVER_TIME_PANELS]
    panels = [p for p in panels if all(p[1])]
    fig, axes = plt.subplots(1 + len(panels), 1, figsize=(11, 2.3 * (1 + len(panels)) + 0.6),
                             sharex=True, squeeze=False)
    axes = axes[:, 0]
    key_arr = np.asarray(keys)
    diffs = np.diff(np.sort(np.unique(x)))
    step = float(diffs.min()) if len(diffs) else 15.0 / (24 * 60)  # one frame, in days
    for g, name in enumerate(groups):
        sel = np.flatnonzero(key_arr == name)
        order = sel[np.argsort(x[sel], kind="stable")]
        c = colors(g % 10)
        req = frames["request_mw"].to_numpy(float)[order]
        # the request holds over each frame: a step from its start to its end
        xs, ys = _gaps_broken(np.repeat(x[order], 2) + np.tile([0.0, step], len(order)),
                              np.repeat(req, 2), 0.5 * step)
        axes[0].plot(xs, ys, color=c, lw=1.0, alpha=0.8)
        axes[0].plot(x[order], frames["delivered_mw"].to_numpy(float)[order], ".",
                     color=c, ms=4, label=name)
        for ax, (_label, cols, _kind, _scale) in zip(axes[1:], panels):
            for k, col in enumerate(cols):
                ax.plot(*_gaps_broken(x[order], frames[col].to_numpy(float)[order],
                                      1.5 * step),
                        ".-" if k == 0 else ".--", color=c, ms=3, lw=0.7)
    axes[0].axhline(0.0, color="0.5", lw=0.5)
    axes[0].set_ylabel("balancing power (MW)")
    axes[0].set_title(title or "request (line) and delivered power (dots) per frame")
    axes[0].legend(fontsize=7, ncol=3, loc="best", title="day type", title_fontsize=7)
    for ax, (label, cols, kind, scale) in zip(axes[1:], panels):
        ax.set_ylabel(label)
        if kind == "vm":
            for v in (lim["vm_min_pu"], lim["vm_max_pu"]):
                ax.axhline(v, color="red", ls="--", lw=0.8)
        elif kind == "loading":
            ax.axhline(lim["loading_max_percent"], color="red", ls="--", lw=0.8)
        if scale == "symlog":
            _symlog(ax, np.concatenate([frames[c].to_numpy(float) for c in cols]))
    bottom = axes[-1]
    bottom.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=12))
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    bottom.set_xlabel("frame start, time of day (HH:MM, CET = UTC+01:00)")
    for ax in axes:
        ax.grid(True, which="major", lw=0.3, alpha=0.6)
    return fig


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a figure as PNG (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def layout_xy(net) -> tuple[np.ndarray, bool]:
    """Bus coordinates for a map: the grid's own (:func:`bus_xy`) when every bus has one,
    else pandapower's generic layout (needs igraph or pygraphviz), else a seeded
    Kamada-Kawai layout of pandapower's topology graph. Second value: own coordinates."""
    xy = bus_xy(net)
    if np.isfinite(xy).all():
        return xy, True
    import pandapower.topology as top

    try:
        from pandapower.plotting.generic_geodata import create_generic_coordinates

        work = copy.deepcopy(net)
        create_generic_coordinates(work, overwrite=True)
        xy = bus_xy(work)
        if np.isfinite(xy).all():
            return xy, False
    except ImportError:     # igraph / pygraphviz are optional in pandapower
        pass
    import networkx as nx

    graph = top.create_nxgraph(net, respect_switches=False, multi=False)
    pos = nx.kamada_kawai_layout(graph) if len(graph) > 1 else {b: (0.0, 0.0) for b in graph}
    return np.array([pos.get(int(b), (np.nan, np.nan)) for b in net.bus.index], float), False


def plot_region(mv_net, areas: pd.DataFrame, path: str | Path, **kw) -> Path:
    """:func:`region_figure` written as a PNG to ``path`` (its own constrained layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = region_figure(mv_net, areas, **kw)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def region_figure(mv_net, areas: pd.DataFrame, *, line_loading_percent=None,
                  limit_percent: float = 100.0, tol_percent: float = 1e-4,
                  title: str = "") -> Figure:
    """A region's congestion on its MV map (a matplotlib Figure with two panels).

    ``mv_net``: the MV DSO's grid; ``line_loading_percent``: per MV line index (signed
    values as magnitudes; default ``res_line``). ``areas``: one row per LV area with
    columns ``mv_bus`` (the transformer's MV bus), ``delivered_mw`` and
    ``max_abs_loading_percent`` (the area's worst line/transformer loading), optionally
    ``binding`` (rows at their limit: ringed). Left: MV lines by loading, each LV area a
    marker at its MV bus coloured by its worst loading (red ring: above
    ``limit_percent`` by more than ``tol_percent``, the AC check's tolerance; MV lines
    likewise drawn red); right: the same map with the areas coloured by the flexibility
    they delivered (MW), marker area growing with it. Coordinates: :func:`layout_xy`."""
    xy, own = layout_xy(mv_net)
    pos = {b: k for k, b in enumerate(mv_net.bus.index)}
    line_ld = np.abs(_values(line_loading_percent, mv_net.line.index,
                             _res(mv_net, "line", "loading_percent")))
    segs = np.array([[xy[pos[f]], xy[pos[t]]] for f, t in
                     zip(mv_net.line.from_bus, mv_net.line.to_bus)]).reshape(-1, 2, 2)
    at = np.array([xy[pos[int(b)]] for b in areas["mv_bus"]]).reshape(-1, 2)
    worst = areas["max_abs_loading_percent"].to_numpy(float)
    delivered = areas["delivered_mw"].to_numpy(float)
    binding = (areas["binding"].to_numpy(float) > 0 if "binding" in areas
               else np.zeros(len(areas), bool))
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5), layout="constrained")
    lc = None
    for k, ax in enumerate(axes):
        lc_k = LineCollection(segs, cmap="viridis", linewidths=1.6)
        lc_k.set_array(np.nan_to_num(line_ld))
        lc_k.set_clim(0, limit_percent)
        ax.add_collection(lc_k)
        lc = lc if lc is not None else lc_k
        over = line_ld > limit_percent + tol_percent
        if over.any():
            ax.add_collection(LineCollection(segs[over], colors="tab:red", linewidths=3.5,
                                             label=f"MV line loading > {limit_percent:g} %"))
        if k == 0:
            sc = ax.scatter(at[:, 0], at[:, 1], c=worst, cmap="YlOrRd", vmin=0,
                            vmax=max(limit_percent, float(np.nanmax(worst, initial=0))),
                            s=46, marker="s", edgecolors="0.3", linewidths=0.5, zorder=4)
            fig.colorbar(sc, ax=ax, label="LV area worst loading (%)", fraction=0.04,
                         pad=0.01)
            hot = worst > limit_percent + tol_percent
            if hot.any():
                ax.scatter(at[hot, 0], at[hot, 1], s=130, facecolors="none",
                           edgecolors="tab:red", linewidths=1.5, zorder=5,
                           label=f"LV area above {limit_percent:g} %")
            if binding.any():
                ax.scatter(at[binding, 0], at[binding, 1], s=90, facecolors="none",
                           edgecolors="black", linewidths=1.0, zorder=5,
                           label="LV area with a binding row")
            ax.set_title("congestion: MV lines and LV areas")
        else:
            size = 20 + 400 * delivered / max(float(np.nanmax(delivered, initial=0)), 1e-9)
            sc = ax.scatter(at[:, 0], at[:, 1], c=delivered, cmap="Blues", vmin=0,
                            s=np.clip(size, 20, None), edgecolors="0.3", linewidths=0.5,
                            zorder=4)
            fig.colorbar(sc, ax=ax, label="delivered flexibility (MW)", fraction=0.04,
                         pad=0.01)
            ax.set_title(f"delivered flexibility: {np.nansum(delivered):.2f} MW from "
                         f"{int((delivered > 1e-6).sum())} of {len(delivered)} LV areas")
        ext = mv_net.ext_grid.bus.to_numpy() if len(mv_net.ext_grid) else []
        for b in ext:
            ax.plot(*xy[pos[int(b)]], marker="*", ms=16, color="black", zorder=6)
        ax.autoscale()
        if own and coordinates_are_degrees(xy):
            ax.set_aspect(1.0 / np.cos(np.radians(float(np.nanmean(xy[:, 1])))),
                          adjustable="datalim")
            ax.set_xlabel("longitude (°E)")
            ax.set_ylabel("latitude (°N)" if k == 0 else "")
            ax.ticklabel_format(useOffset=False)
        elif own:
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xlabel("x (m)")
            ax.set_ylabel("y (m)" if k == 0 else "")
        else:                       # no coordinates: a layout, no axes to read
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(ax.get_title() + " (generic layout)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(lc, ax=axes, label="MV line loading (%)", fraction=0.03, pad=0.02,
                 location="bottom")
    fig.suptitle(title or str(mv_net.name))
    return fig
