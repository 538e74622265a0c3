"""The figures as objects (flexcore.study.plotting): what they show is checked against the
data they were given and against pandapower's AC power flow; no co-simulation.

* Figures 5/6 (grid_figure): buses coloured by voltage with a voltage colour bar, lines by
  loading with a loading colour bar, degrees labelled as degrees;
* over time (over_time_figure): clock-time x axis (HH:MM), voltage and loading panels,
  symmetric-log error axes that keep exact zeros;
* Figures 7/8 (pf_vs_prediction_figure): the error panel carries the unit;
* a unit in every axis label.
"""
from __future__ import annotations

import re

import matplotlib.dates as mdates
import numpy as np
import pandapower as pp
import pandas as pd

from flexcore.district.clock import FrameClock
from flexcore.study.plotting import (
    bus_xy,
    coordinates_are_degrees,
    grid_figure,
    over_time_figure,
    pf_vs_prediction_figure,
    plot_grid,
    plot_over_time,
    time_of_day,
)

UNIT = re.compile(r"\((p\.u\.|%|MW|EUR/h|m|°E|°N|HH:MM[^)]*)\)")


def labels_have_units(fig) -> list[str]:
    """Every non-empty axis label of every axes of ``fig`` (colour bars included) that
    lacks a unit in parentheses."""
    bad = []
    for ax in fig.axes:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            if label and not UNIT.search(label):
                bad.append(label)
    return bad


def colorbar_labels(fig) -> dict[str, object]:
    """{label: colour bar} of the figure's colour bars."""
    out = {}
    for ax in fig.axes:
        cb = getattr(ax, "_colorbar", None)
        if cb is not None:
            out[cb.ax.get_ylabel() or cb.ax.get_xlabel()] = cb
    return out


def small_grid(load_mw: float, *, degrees: bool = False) -> pp.pandapowerNet:
    """MV bus - transformer - three LV buses in a row, 100 m apart, one load at the end;
    coordinates in metres or, like SimBench's, in degrees (lon, lat)."""
    def at(x_m: float, y_m: float) -> tuple[float, float]:
        return (11.39 + x_m / 66_000.0, 53.64 + y_m / 111_000.0) if degrees else (x_m, y_m)

    net = pp.create_empty_network()
    mv = pp.create_bus(net, 20.0, geodata=at(0.0, -50.0))
    lv = [pp.create_bus(net, 0.4, geodata=at(100.0 * k, 0.0)) for k in range(3)]
    pp.create_ext_grid(net, mv)
    pp.create_transformer(net, mv, lv[0], "0.25 MVA 20/0.4 kV")
    for a, b in zip(lv, lv[1:]):
        pp.create_line(net, a, b, 0.1, "NAYY 4x150 SE")
    pp.create_load(net, lv[-1], p_mw=load_mw)
    pp.runpp(net, numba=False)  # no JIT compilation for three buses
    return net


def test_grid_figure_colours_buses_by_voltage_and_lines_by_loading():
    net = small_grid(0.1, degrees=True)
    fig = grid_figure(net, title="Figure 6")
    bars = colorbar_labels(fig)
    assert set(bars) == {"bus voltage (p.u.)", "line loading (%)"}
    assert bars["bus voltage (p.u.)"].mappable.get_clim() == (0.95, 1.05)
    assert bars["line loading (%)"].mappable.get_clim() == (0.0, 100.0)
    # the buses' colours are pandapower's AC voltages
    ax = fig.axes[0]
    dots = [c for c in ax.collections if c.get_array() is not None and c.get_cmap().name
            == "coolwarm"]
    shown = np.sort(np.concatenate([np.asarray(c.get_array(), float) for c in dots]))
    assert np.allclose(shown, np.sort(net.res_bus.vm_pu.to_numpy()), atol=1e-12)
    lines = [c for c in ax.collections if c.get_array() is not None and c not in dots]
    assert np.allclose(lines[0].get_array(), net.res_line.loading_percent)
    # lon/lat (SimBench's GeoJSON): labelled as degrees, not metres
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude (°E)", "latitude (°N)")
    assert not labels_have_units(fig)


def test_grid_figure_in_metres_marks_limit_violations_and_takes_a_given_state(tmp_path):
    net = small_grid(0.22)  # the far end sags below 0.95 p.u., the cable loads > 100 %
    vm, ld = net.res_bus.vm_pu, net.res_line.loading_percent
    assert vm.min() < 0.95 and ld.max() > 100
    fig = grid_figure(net, title="Figure 5")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (m)", "y (m)")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["line loading > 100 %", "bus voltage < 0.95 p.u."]
    below = [c for c in ax.collections if c.get_label() == "bus voltage < 0.95 p.u."][0]
    assert np.allclose(np.sort(below.get_array()), np.sort(vm[vm < 0.95]))
    # the same picture from plain Series keyed by element index (no net.res_* needed)
    state = dict(vm_pu=vm.copy(), line_loading_percent=-ld.copy(),  # signed: magnitudes
                 trafo_loading_percent=net.res_trafo.loading_percent.copy())
    for table in ("res_bus", "res_line", "res_trafo"):
        net[table] = net[table].iloc[0:0]
    fig2 = grid_figure(net, title="Figure 5", **state)
    legend2 = [t.get_text() for t in fig2.axes[0].get_legend().get_texts()]
    assert legend2 == legend
    arrays = {k: v.to_numpy() for k, v in state.items()}  # plain arrays in element order
    fig3 = grid_figure(net, title="Figure 5", **arrays)
    assert [t.get_text() for t in fig3.axes[0].get_legend().get_texts()] == legend
    assert plot_grid(net, tmp_path / "g.png", **state).stat().st_size > 10_000


def frames_table(*, new_columns: bool = True) -> pd.DataFrame:
    """Two day types of 96 frames with the frames-table columns the plot reads; exact zero
    errors in frames without a request (as a co-simulation records them)."""
    clock = FrameClock.for_day_types(["winter_workday", "summer_sunday"])
    f = pd.DataFrame({"frame": range(len(clock.frames)),
                      "timestamp": [fr.timestamp for fr in clock.frames],
                      "day_type": [fr.day_type for fr in clock.frames],
                      "slot": [fr.slot for fr in clock.frames]})
    req = np.where(f["slot"].between(72, 73), 1.8, 0.0)
    n = len(f)
    f["request_mw"], f["delivered_mw"] = req, req
    f["vm_mae_pu"] = np.where(req > 0, 1e-9, 0.0)
    f["loading_mae_percent"] = np.where(req > 0, 1e-6, 0.0)
    f["cost_eur_per_h"] = 100.0 * req
    f["vm_min_pu"], f["vm_max_pu"] = np.full(n, 0.97), np.full(n, 1.04)
    f["loading_max_percent"] = np.linspace(20, 90, n)
    if not new_columns:  # an older frames table
        f = f.drop(columns=["vm_min_pu", "vm_max_pu", "loading_max_percent"]).rename(
            columns={"cost_eur_per_h": "cost_eur"})
    return f


def test_over_time_has_clock_time_axes_and_max_voltage_and_loading_panels(tmp_path):
    f = frames_table()
    fig = over_time_figure(f)
    axes = fig.axes
    labels = [ax.get_ylabel() for ax in axes]
    assert labels == ["balancing power (MW)", "voltage min / max (p.u.)",
                      "highest branch loading (%)", "voltage MAE (p.u.)", "loading MAE (%)",
                      "cost (EUR/h)"]
    assert not labels_have_units(fig)
    bottom = axes[-1]
    assert isinstance(bottom.xaxis.get_major_formatter(), mdates.DateFormatter)
    fig.canvas.draw()
    ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert ticks and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks)
    # x is the frame's clock time: the 18:00 frame of both day types at 18:00
    x = time_of_day(f["timestamp"])
    assert mdates.num2date(x[72]).strftime("%H:%M") == "18:00" == \
        mdates.num2date(x[96 + 72]).strftime("%H:%M")
    # the loading panel shows the table's numbers, per day type, at the frames' times
    shown = np.concatenate([line.get_ydata() for line in axes[2].get_lines()
                            if line.get_linestyle() != "--"])
    assert np.allclose(np.sort(shown[np.isfinite(shown)]), np.sort(f["loading_max_percent"]))
    # errors on symmetric-log axes: the exact zeros are drawn (at 0), not dropped
    for ax, col in ((axes[3], "vm_mae_pu"), (axes[4], "loading_mae_percent")):
        assert ax.get_yscale() == "symlog"
        y = np.concatenate([line.get_ydata() for line in ax.get_lines()])
        assert (y == 0).sum() == (f[col] == 0).sum() > 0
        assert ax.get_ylim()[0] <= 0.0
    assert plot_over_time(f, tmp_path / "over_time.png").stat().st_size > 10_000


def test_over_time_with_an_older_frames_table_skips_the_missing_panels():
    fig = over_time_figure(frames_table(new_columns=False))
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "balancing power (MW)", "voltage MAE (p.u.)", "loading MAE (%)", "cost (EUR/h)"]
    cost = np.concatenate([line.get_ydata() for line in fig.axes[-1].get_lines()])
    assert np.nanmax(cost) == 180.0  # cost_eur of older tables (EUR/h) is drawn


def test_simbench_coordinates_are_degrees_and_bergwald_metres():
    from flexcore.grid.grids import load_grid

    # SimBench 1-LV-rural1's buses span 11.4085-11.411 E, 53.6387-53.6419 N
    assert coordinates_are_degrees(np.array([[11.4085, 53.6387], [11.411, 53.6419]]))
    assert not coordinates_are_degrees(bus_xy(load_grid("bergwald")))  # x_m, y_m


def test_prediction_figures_error_panel_has_the_unit():
    fig = pf_vs_prediction_figure(["bus 1", "bus 2"], [1.01, 1.02], [1.0101, 1.0199],
                                  ylabel="voltage (p.u.)", title="Figure 7", errors=True)
    top, err = fig.axes
    assert err.get_ylabel() == "estimate - AC (p.u.)"
    assert np.allclose([p.get_height() for p in err.patches], [1e-4, -1e-4])
    assert not labels_have_units(fig)
    fig8 = pf_vs_prediction_figure(["line 3"], [90.0], [91.0], ylabel="loading (%)",
                                   title="Figure 8", errors=True)
    assert fig8.axes[1].get_ylabel() == "estimate - AC (%)"
