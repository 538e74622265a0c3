"""Grid plots (the analogue of the source's Figures 3, 5 and 6) and comparison plots."""
from __future__ import annotations

import json
from pathlib import Path

# a non-interactive backend: plots are written to files, also on machines without a screen
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection


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


def plot_grid(net, path: str | Path, *, title: str = "", color_by: str = "loading",
              limit_percent: float = 100.0, vm_limits=(0.95, 1.05)) -> Path:
    """Lines coloured by loading (red above the limit) or buses by voltage; writes a PNG.

    Needs a converged power flow in ``net`` (``res_line``, ``res_bus``).
    """
    xy = bus_xy(net)
    pos = {b: k for k, b in enumerate(net.bus.index)}
    if np.isnan(xy).all():
        raise ValueError("the grid has no bus coordinates to plot")
    fig, ax = plt.subplots(figsize=(10, 7))
    lv = (net.bus.vn_kv.loc[net.line.from_bus].to_numpy() < 1.0)  # MV feeders drawn apart
    mv_segs = np.array([[xy[pos[f]], xy[pos[t]]] for f, t in
                        zip(net.line.from_bus[~lv], net.line.to_bus[~lv])]).reshape(-1, 2, 2)
    if len(mv_segs):
        ax.add_collection(LineCollection(mv_segs, colors="0.7", linewidths=0.8, linestyles="--"))
    lines = net.line[lv]
    segs = np.array([[xy[pos[f]], xy[pos[t]]] for f, t in zip(lines.from_bus, lines.to_bus)])
    loading = net.res_line.loading_percent.reindex(lines.index).to_numpy(float)
    if color_by == "loading":
        lc = LineCollection(segs, cmap="viridis", linewidths=1.2 + lines.parallel.to_numpy())
        lc.set_array(np.clip(loading, 0, limit_percent))
        lc.set_clim(0, limit_percent)
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, label="line loading (%)")
        over = loading > limit_percent + 1e-9
        if over.any():
            ax.add_collection(LineCollection(segs[over], colors="red", linewidths=3.5,
                                             label=f"> {limit_percent:.0f} %"))
        ax.scatter(xy[:, 0], xy[:, 1], s=3, c="0.4", zorder=3)
    else:
        ax.add_collection(LineCollection(segs, colors="0.6", linewidths=1.0))
        vm = net.res_bus.vm_pu.reindex(net.bus.index).to_numpy(float)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=vm, s=10, cmap="coolwarm", vmin=vm_limits[0],
                        vmax=vm_limits[1], zorder=3)
        fig.colorbar(sc, ax=ax, label="voltage (p.u.)")
        bad = (vm < vm_limits[0]) | (vm > vm_limits[1])
        if bad.any():
            ax.scatter(xy[bad, 0], xy[bad, 1], s=40, facecolors="none", edgecolors="red",
                       zorder=4, label="voltage limit violated")
    for k, (_hv, lv) in enumerate(zip(net.trafo.hv_bus, net.trafo.lv_bus)):
        ax.plot(*xy[pos[lv]], marker="s", ms=11, color="black", zorder=5)
        tl = net.res_trafo.loading_percent.iloc[k] if len(net.res_trafo) else np.nan
        ax.annotate(f"T{k + 1} {tl:.0f} %", xy[pos[lv]], xytext=(9, 9),
                    textcoords="offset points", fontsize=8,
                    color="red" if tl > limit_percent else "black")
    ax.set_aspect("equal")
    ax.autoscale()
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title or str(net.name))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_pf_vs_prediction(keys, pf, predicted, path: str | Path, *, ylabel: str, title: str,
                          limits=None, errors: bool = False) -> Path:
    """Bar/line comparison of AC power flow and MILP prediction at critical elements (Fig. 7/8).

    ``errors=True`` adds a lower panel with the error (prediction - AC) per element, which
    stays readable when the two markers coincide on the upper panel's scale."""
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
    ax.set_title(title)
    ax.legend()
    bottom = ax
    if errors:
        ax_err.bar(x, predicted - pf, color="tab:orange")
        ax_err.axhline(0.0, color="0.3", lw=0.6)
        ax_err.set_ylabel("estimate - AC")
        ax_err.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        bottom = ax_err
    bottom.set_xticks(x, keys, rotation=90, fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a figure as PNG (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
