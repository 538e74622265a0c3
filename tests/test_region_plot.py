"""The region figure (flexcore.study.plotting.region_figure) as an object: what it shows is
the MV grid's AC loadings (pandapower) and the per-area values it was given."""
from __future__ import annotations

import numpy as np
import pandapower as pp
import pandas as pd

from flexcore.region.split import split_region
from flexcore.study.plotting import layout_xy, plot_region, region_figure
from tests.region_grid import small_region
from tests.test_plots import colorbar_labels, labels_have_units


def _areas(region, delivered, worst, binding=None):
    return pd.DataFrame({"mv_bus": [a.mv_bus for a in region.areas],
                         "delivered_mw": delivered, "max_abs_loading_percent": worst,
                         "binding": binding if binding is not None else [0] * len(worst)},
                        index=[a.name for a in region.areas])


def test_region_figure_shows_mv_loading_and_each_area(tmp_path):
    region = split_region(small_region(), source="small")
    mv = region.mv_net
    assert not mv.res_line.empty and len(mv.line) == 3
    areas = _areas(region, [0.0, 0.12, 0.3], [40.0, 97.0, 130.0], [0, 1, 1])
    fig = region_figure(mv, areas, title="small region")
    bars = colorbar_labels(fig)
    assert set(bars) == {"MV line loading (%)", "LV area worst loading (%)",
                         "delivered flexibility (MW)"}
    left, right = fig.axes[0], fig.axes[1]
    lines = [c for c in left.collections if c.get_cmap().name == "viridis"]
    np.testing.assert_allclose(lines[0].get_array(), mv.res_line.loading_percent)
    worst = [c for c in left.collections if c.get_cmap().name == "YlOrRd"][0]
    np.testing.assert_allclose(worst.get_array(), [40.0, 97.0, 130.0])
    # the markers sit at the areas' MV buses (a generic layout: no coordinates here)
    xy, own = layout_xy(mv)
    assert not own
    pos = {b: k for k, b in enumerate(mv.bus.index)}
    np.testing.assert_allclose(worst.get_offsets(), xy[[pos[b] for b in areas.mv_bus]])
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend == ["LV area above 100 %", "LV area with a binding row"]
    hot = [c for c in left.collections if c.get_label() == "LV area above 100 %"][0]
    np.testing.assert_allclose(hot.get_offsets(), xy[[pos[areas.mv_bus.iloc[2]]]])
    dots = [c for c in right.collections if c.get_cmap().name == "Blues"][0]
    np.testing.assert_allclose(dots.get_array(), [0.0, 0.12, 0.3])
    assert "0.42 MW from 2 of 3 LV areas" in right.get_title()
    assert not labels_have_units(fig)
    assert plot_region(mv, areas, tmp_path / "region.png").stat().st_size > 10_000


def test_region_figure_uses_the_grid_s_own_coordinates_and_a_given_state(tmp_path):
    net = small_region()
    for k, b in enumerate(net.bus.index):        # metres, as in a surveyed grid
        net.bus.at[b, "geo"] = f'{{"type": "Point", "coordinates": [{100.0 * k}, 0.0]}}'
    region = split_region(net, source="small")
    mv = region.mv_net
    xy, own = layout_xy(mv)
    assert own and xy[1, 0] == 100.0
    over = pd.Series(-120.0, index=mv.line.index)             # signed: magnitudes
    fig = region_figure(mv, _areas(region, [0.1] * 3, [10.0] * 3),
                        line_loading_percent=over)
    left = fig.axes[0]
    assert (left.get_xlabel(), left.get_ylabel()) == ("x (m)", "y (m)")
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["MV line loading > 100 %"]
    pp.runpp(mv)
    assert mv.res_line.loading_percent.max() < 100          # the drawn state is the given one
    # SimBench's degrees: drawn to scale in both panels
    for b in net.bus.index:
        net.bus.at[b, "geo"] = f'{{"type": "Point", "coordinates": [{11.4 + b / 1e3}, 53.6]}}'
    deg = split_region(net, source="small")
    path = plot_region(deg.mv_net, _areas(deg, [0.1] * 3, [10.0] * 3), tmp_path / "r.png")
    assert path.stat().st_size > 10_000
