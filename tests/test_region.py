"""Region split and the region study on a hand-built MV+LV grid (not SimBench); the
oracle is pandapower's AC power flow of the whole region."""
from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from flexcore.exchange.package import check_bids
from flexcore.grid.gridgen import GridError
from flexcore.grid.grids import load_simbench
from flexcore.market.multi import SLACK_COLUMN, clear_region
from flexcore.region.dsos import area_packages
from flexcore.region.split import LV_LIMITS, MV_LIMITS, mvlv_trafos, split_region
from flexcore.region.study import (
    TABLE1_LOADING_PERCENT,
    TABLE1_VM_PU,
    region_bids,
    run_region,
    setup_region,
)
from tests.region_grid import small_region


@pytest.fixture(scope="module")
def region():
    return split_region(small_region(), source="small")


def test_split_reproduces_the_whole_region(region):
    net = region.net
    assert [a.name for a in region.areas] == [f"lv{t}" for t in mvlv_trafos(net)]
    assert len(region.areas) == 3
    for a in region.areas:
        # each LV model: its buses + the MV bus, its own ext_grid at the MV bus
        assert set(a.net.bus.index) == set(a.buses.tolist()) | {a.mv_bus}
        assert a.net.ext_grid.bus.tolist() == [a.mv_bus]
        assert len(a.net.load) == 4 and (net.bus.vn_kv.loc[a.buses] < 1).all()
        np.testing.assert_allclose(a.net.res_bus.vm_pu.loc[a.buses],
                                   net.res_bus.vm_pu.loc[a.buses], atol=1e-9)
        # the area's draw = the transformer's flow in the whole region
        assert a.p_mw == pytest.approx(net.res_trafo.p_hv_mw.at[a.trafo], abs=1e-9)
    mv = region.mv_net
    assert not (mv.bus.vn_kv < 1).any() and len(mv.load) == 4   # MV load + 3 area loads
    np.testing.assert_allclose(mv.res_bus.vm_pu, net.res_bus.vm_pu.loc[mv.bus.index],
                               atol=1e-9)
    assert (region.lv_limits, region.mv_limits) == (LV_LIMITS, MV_LIMITS)


def test_split_refuses_grids_without_mvlv_transformer():
    net = pp.create_empty_network()
    b = pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, b)
    with pytest.raises(GridError, match="no MV/LV transformer"):
        split_region(net, source="flat.json")


def test_split_refuses_lv_fed_by_two_transformers():
    net = small_region(n_lv=2)
    lv = net.bus.index[net.bus.name.isin(["lv0-3", "lv1-3"])].tolist()
    pp.create_line(net, lv[0], lv[1], 0.1, "NAYY 4x150 SE")
    with pytest.raises(GridError, match="meshed LV grid"):
        split_region(net, source="meshed")


def test_mvlv_simbench_codes_only_on_the_region_path():
    with pytest.raises(GridError, match="not a low-voltage grid"):
        load_simbench("1-MVLV-semiurb-all-0-sw")


def test_region_study_is_ac_safe_and_accurate_after_refinement(region):
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    setup = setup_region(region, bids)
    pkg = setup.lv[0].published()
    assert pkg.columns[-1] == SLACK_COLUMN
    # the slack voltage moves LV voltages about one to one
    assert 0.9 < float(np.median(setup.lv[0].slack_vtdf[0])) < 1.1
    total = sum(b.volume_mw.sum() for b in bids.values())
    rep = run_region(setup, 0.3 * total, grid_name="small")
    assert rep.status == "optimal" and rep.ac_converged and rep.ac_safe
    delivered = sum(a.delivered_mw for a in rep.areas)
    assert delivered == pytest.approx(0.3 * total, abs=1e-7)
    # limits bind: the cheapest bids alone would have cost less
    prices = np.concatenate([b.price_eur_per_mwh for b in bids.values()])
    vols = np.concatenate([b.volume_mw for b in bids.values()])
    left, merit = 0.3 * total, 0.0
    for j in np.argsort(prices):
        take = min(vols[j], left)
        merit, left = merit + take * prices[j], left - take
    assert rep.cost_eur_per_h > merit + 1e-3
    assert rep.rounds >= 1 and rep.relevant_rows > 0
    assert rep.max_vm_err_pu <= TABLE1_VM_PU
    assert rep.max_loading_err_percent <= TABLE1_LOADING_PERCENT
    # delivered at the interface = activation minus the change of losses
    assert rep.delivered_at_interface_mw == pytest.approx(delivered, rel=0.05)


def test_a_refinement_point_a_tolerance_outside_the_bids_stays_clearable(region):
    """A clearing may put a bid a solver tolerance below its lower bound (seen: -1.9e-11 MW
    on a bid from 0 MW); the refined package must still pass check_bids and clear."""
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    setup = setup_region(region, bids, coupled=False)
    d = setup.lv[0]
    x = np.where(d.bids.lower_mw == 0.0, -1.9e-11, d.bids.lower_mw)
    d.refine(x)
    assert d.package.m == 4 and np.all(d.package.p_flex_mw[-1] >= d.bids.lower_mw)
    check_bids(d.package, d.bids)
    total = sum(b.volume_mw.sum() for b in bids.values())
    res = clear_region(area_packages(setup.lv, None), 0.2 * total)
    assert res.ok


def test_packages_cross_signed_and_a_wrong_key_is_refused(region, tmp_path):
    from flexcore.exchange.package import load_package
    from flexcore.exchange.signing import SignatureError
    from flexcore.region.dsos import SignedExchange

    bids = region_bids(region, seed=2, share=(1.0, 2.0))
    setup = setup_region(region, bids)
    ex = SignedExchange(tmp_path, [d.name for d in setup.lv] + ["mv"])
    total = sum(b.volume_mw.sum() for b in bids.values())
    rep = run_region(setup, 0.2 * total, max_rounds=0, exchange=ex)
    assert rep.ac_converged and ex.shipped == len(setup.lv) + 1
    first, second = setup.lv[0].name, setup.lv[1].name
    # a package verifies only against its own DSO's key
    load_package(tmp_path / first / "round-0", allow_full=True,
                 trust=[ex.keys[first].public_key()], require_signature=True)
    with pytest.raises(SignatureError):
        load_package(tmp_path / first / "round-0", allow_full=True,
                     trust=[ex.keys[second].public_key()], require_signature=True)


@pytest.mark.slow
def test_region_command_writes_its_run_folder(tmp_path):
    import json
    import re

    from scenarios.cli import main

    grid = tmp_path / "region.json"
    net = small_region()
    net.load["profile"] = ["G1-A"] + ["H0-A"] * (len(net.load) - 1)   # SimBench's names
    pp.to_json(net, str(grid))
    toml = tmp_path / "region.toml"
    toml.write_text(f'[region]\ngrid = "{grid}"\nseed = 1\nrequest_share = 0.3\n'
                    'bid_share = [1.0, 3.0]\nday_type = "winter_workday"\nframe = 72\n')
    out = tmp_path / "run"
    assert main(["region", str(toml), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ac_safe"] and summary["status"] in ("optimal", "time_limit")
    assert (out / "areas.csv").read_text().count("\n") == 5      # header, 3 areas, mv
    folders = sorted(p.name for p in (out / "packages").iterdir())  # public ids, not lv<k>
    assert len(folders) == 4 and folders[-1] == "mv"
    assert all(re.fullmatch(r"d[0-9a-f]{12}", f) for f in folders[:-1])
    published = json.loads((out / "audit_mv_published.json").read_text())  # privacy exact
    assert published["nesting"]["total"] == 2 and published["areas"] == 3
    assert (out / "region.png").stat().st_size > 10_000
    meta = json.loads((out / "meta.json").read_text())
    assert meta["profile"]["date"] == "2016-01-20" and meta["profile"]["frame"] == 72
    assert 0 < meta["profile"]["load_p_mw"] < net.load.p_mw.sum()    # 18:00, not the static
    assert summary["history"][-1]["ac_safe"] and "binding_mv_rows" in summary
    audit_mv = json.loads((out / "audit_mv.json").read_text())   # [region] audit = true
    assert audit_mv["summary"]["coupling_own_bus"] == "3/3"    # slack rows give every area
    toml.write_text('[region]\ngrid = "x"\nrequest_share = 2.0\n')
    assert main(["region", str(toml), "--check"]) == 2


def test_mv_and_lv_limits_bind_and_the_dispatch_stays_ac_safe():
    """An MV voltage limit just above the base case (the activation raises the MV feeder by
    ~1e-4 p.u.): the MV package's row binds, an LV row binds, and every clearing of the
    refinement loop is AC-safe on the whole region; the final one is within Table 1."""
    from flexcore.exchange.limits import Limits

    net = small_region()
    free = split_region(net, source="small")
    vmax = float(free.mv_net.res_bus.vm_pu.max()) + 5e-5
    tight = split_region(net, source="small", mv_limits=Limits(vm_min_pu=0.965,
                                                               vm_max_pu=vmax))
    reps = []
    for region in (free, tight):
        bids = region_bids(region, seed=1, share=(1.0, 3.0))
        total = sum(b.volume_mw.sum() for b in bids.values())
        reps.append(run_region(setup_region(region, bids), 0.3 * total, grid_name="small"))
    loose, rep = reps
    assert loose.binding_mv_rows == 0 and loose.mv.check.vm_max_pu > vmax + 1e-5
    assert rep.status == "optimal" and rep.ac_safe and rep.rounds >= 1
    assert rep.binding_mv_rows >= 1 and rep.binding_lv_rows >= 1
    assert rep.mv.check.vm_max_pu <= vmax + 1e-6                 # pandapower's AC
    assert all(h["ac_safe"] for h in rep.history) and len(rep.history) == rep.rounds + 1
    assert rep.max_vm_err_pu <= TABLE1_VM_PU
    assert rep.max_loading_err_percent <= TABLE1_LOADING_PERCENT
    assert rep.cost_eur_per_h > loose.cost_eur_per_h + 1e-3     # the MV limit costs


@pytest.mark.parametrize("line, culprit", [
    ('day_type = "winter_weekday"', "winter_weekday"),
    ('date = "2017-01-13"', "2017-01-13"),
    ('date = "2016-01-13"\nday_type = "winter_workday"', "not both"),
    ("frame = 96", "frame"),
    ("request_mw = -1.0", "request_mw"),
])
def test_bad_day_type_date_or_request_is_one_line_exit_2(tmp_path, capsys, line, culprit):
    from scenarios.cli import main

    toml = tmp_path / "r.toml"
    toml.write_text(f'[region]\ngrid = "x"\n{line}\n')
    assert main(["region", str(toml), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert culprit in err and str(toml) in err and "\n" not in err


def test_a_simbench_day_and_request_mw_are_accepted(tmp_path):
    from scenarios.region import load_region_config

    toml = tmp_path / "r.toml"
    toml.write_text('[region]\ngrid = "x"\nday_type = "summer_sunday"\nframe = 48\n'
                    'request_mw = 12\n')
    cfg = load_region_config(toml)
    assert (cfg.day_type, cfg.frame, cfg.request_mw) == ("summer_sunday", 48, 12.0)


@pytest.mark.parametrize("name, code", [("mvlv.toml", "1-MVLV-semiurb-all-0-sw"),
                                        ("mvlv_urban.toml", "1-MVLV-urban-all-0-sw"),
                                        ("mvlv_binding.toml", "1-MVLV-semiurb-all-0-sw")])
def test_the_shipped_region_scenarios_load(name, code):
    from pathlib import Path

    from scenarios.region import load_region_config

    cfg = load_region_config(Path(__file__).parents[1] / "scenarios" / name)
    assert cfg.grid == f"simbench:{code}" and cfg.time_limit_s > 0
