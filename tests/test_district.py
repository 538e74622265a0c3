"""The Bergwald-like district and the grid generator (issue: foundation)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandapower as pp
import pandapower.toolbox as tb
import pandas as pd
import pytest

from flexcore.district import buildings as district
from flexcore.grid import grids
from flexcore.grid.gridgen import GridOptions, build_grid
from flexcore.study.bidgen import synthetic_bids
from scenarios.cli import main as cli_main


@pytest.fixture(scope="module")
def table():
    return district.load_building_table()


@pytest.fixture(scope="module")
def net():
    return grids.load_grid("bergwald")


def test_building_mix_matches_bergwald(table):
    assert len(table) == 241
    assert table["type"].value_counts().to_dict() == district.BERGWALD_MIX
    assert table["building_id"].is_unique
    # figures fit their type (ranges documented in flexcore.district.ARCHETYPES)
    houses = table[table.type == "single_house"]
    assert houses.dwellings.eq(1).all()
    assert houses.annual_kwh.between(3600, 4800).all()
    towers = table[table.type == "apartment_tower"]
    assert towers.dwellings.between(12, 30).all()
    assert (towers.annual_kwh / towers.dwellings).between(1500, 2600 + 3 * 85).all()
    school = table[table.type == "school"].iloc[0]
    assert 10 <= school.annual_kwh / school.floor_area_m2 <= 15
    assert (table.roof_area_m2 > 0).all()


def test_shipped_tables_are_reproduced_by_the_generator(table):
    fresh, streets = district.make_bergwald()
    pd.testing.assert_frame_equal(district.validate_building_table(fresh), table,
                                  check_dtype=False, atol=0.06)
    pd.testing.assert_frame_equal(streets, district.load_street_table(), check_dtype=False)


def test_generator_rebuilds_the_shipped_grid_identically(net):
    rebuilt = grids.build_bergwald()
    assert tb.nets_equal(rebuilt, net, check_only_results=False)


def test_grid_is_radial_with_one_connection_per_building(net, table):
    cp = grids.connection_points(net)
    assert len(cp) == 241
    assert set(cp.building_id) == set(table.building_id)
    assert cp.bus.is_unique
    assert grids.is_radial(net)
    assert len(net.trafo) == 3 and np.allclose(net.trafo.sn_mva, 0.63)
    assert set(net.line.std_type) <= {"NAYY 4x150 SE", "NAYY 4x50 SE",
                                       "NA2XS2Y 1x185 RM/25 12/20 kV"}


def test_base_case_converges_within_limits(net):
    s = grids.summarize(net)
    assert 0.95 <= s.vm_min_pu and s.vm_max_pu <= 1.05
    assert s.max_line_loading_percent < 100.0
    assert s.max_trafo_loading_percent < 100.0
    assert s.load_mw == pytest.approx(net.load.p_mw.sum())


def test_activating_all_flexibility_congests_lines(net, table):
    """The source's Figure 5: every bid at once overloads some branches."""
    bids = synthetic_bids(net, seed=1, table=table)
    work = copy.deepcopy(net)
    for bus, p in zip(bids.bus, bids.volume_mw):
        pp.create_sgen(work, int(bus), p_mw=float(p))
    pp.runpp(work)
    assert (work.res_line.loading_percent > 100).sum() >= 5
    assert work.res_bus.vm_pu.max() > 1.05


def test_custom_table_without_streets_builds_a_radial_grid(tmp_path):
    rows = [
        ("H1", 0, 20, "single_house"), ("H2", 25, 20, "single_house"),
        ("H3", 50, 22, "duplex"), ("S1", 80, -15, "shop"), ("T1", 120, 30, "apartment_tower"),
    ]
    path = tmp_path / "b.csv"
    pd.DataFrame(rows, columns=["building_id", "x_m", "y_m", "type"]).to_csv(path, index=False)
    net = grids.build_from_table(path, options=GridOptions(n_substations=1))
    assert len(grids.connection_points(net)) == 5
    assert grids.is_radial(net)
    pp.runpp(net)
    assert net.converged


def test_geojson_building_table(tmp_path):
    feats = [{"type": "Feature",
              "geometry": {"type": "Point", "coordinates": [8.40 + k * 3e-4, 49.0]},
              "properties": {"building_id": f"G{k}", "type": "single_house"}} for k in range(4)]
    path = tmp_path / "b.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    table = district.load_building_table(path)
    # 3e-4 degrees of longitude at 49 N are about 21.9 m
    assert table.x_m.diff().iloc[1] == pytest.approx(21.9, abs=0.2)
    net = build_grid(table, options=GridOptions(n_substations=1))
    assert len(net.load) == 4


def test_bad_building_table_names_the_culprit(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("building_id,x_m,y_m,type\nA,0,0,castle\n")
    with pytest.raises(district.BuildingTableError, match="castle"):
        district.load_building_table(path)
    path.write_text("building_id,x_m,y_m,type,annual_kwh\nA,0,0,single_house,nan\n")
    with pytest.raises(district.BuildingTableError, match="annual_kwh"):
        district.load_building_table(path)


def test_simbench_grid_treats_load_buses_as_connections():
    net = grids.load_grid("simbench:1-LV-rural1--0-no_sw")
    cp = grids.connection_points(net)
    assert len(cp) == len(net.load) == 13
    s = grids.summarize(net)
    assert s.trafos == 1 and s.radial


def test_unknown_grid_source_is_a_clear_error():
    with pytest.raises(grids.GridError, match="not found"):
        grids.load_grid("no/such/grid.json")


def test_cli_grid_build_and_info(tmp_path, capsys):
    out = tmp_path / "GRID.json"
    assert cli_main(["grid", "build", "--out", str(out)]) == 0
    assert cli_main(["grid", "info", str(out), "--plot", str(tmp_path / "g.png")]) == 0
    text = capsys.readouterr().out
    assert "building connections  241" in text and "630 kVA" in text
    assert (tmp_path / "g.png").stat().st_size > 10_000
    assert cli_main(["grid", "info", str(tmp_path / "missing.json"), "--no-plot"]) == 2
