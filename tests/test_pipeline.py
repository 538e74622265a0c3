"""The source's single frame on the Bergwald district, and the DSO/TSO file exchange.

Oracle: pandapower AC power flows of the DSO's full model at the cleared activation.
"""
from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pytest

from flexcore.district.buildings import load_building_table
from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.bids import write_bids
from flexcore.grid import grids
from flexcore.market import read_clearing
from flexcore.study.bidgen import synthetic_bids
from flexcore.study.coordination import coordinate
from scenarios.cli import main as cli_main

REQUEST_MW = 1.8
#: the source's Table 1 (docs/method.md): voltages p.u., loadings %
TABLE1 = {"vm_mae": 2.3e-5, "vm_rmse": 2.6e-5, "loading_mae": 6.1e-3, "loading_rmse": 9.8e-3}


@pytest.fixture(scope="module")
def setup():
    net = grids.load_grid("bergwald")
    bids = synthetic_bids(net, seed=1, table=load_building_table())
    return net, bids, Linearizer(net, bids, salt="test")


def test_all_bids_congest_but_the_clearing_does_not(setup):
    net, bids, lin = setup
    vm_all, lp_all = lin.power_flow(bids.volume_mw)
    assert (np.abs(lp_all) > 100).sum() >= 5 or vm_all.max() > 1.05
    result = coordinate(lin, bids, REQUEST_MW, max_rounds=0)
    assert result.clearing.status == "optimal"
    assert result.clearing.delivered_mw == pytest.approx(REQUEST_MW, abs=1e-6)
    act = result.activation(bids.ids)
    assert act.sum() == pytest.approx(REQUEST_MW, abs=1e-6)
    assert ((act >= bids.lower_mw - 1e-9) & (act <= bids.upper_mw + 1e-9)).all()
    # the independent oracle: a fresh pandapower net with the activation as generators
    work = pp.from_json(str(grids.bergwald_grid_path()))
    for bus, p in zip(bids.bus, act):
        pp.create_sgen(work, int(bus), p_mw=float(p))
    pp.runpp(work)
    assert work.res_line.loading_percent.max() <= 100.0 + 1e-6
    assert work.res_trafo.loading_percent.max() <= 100.0 + 1e-6
    assert 0.95 - 1e-9 <= work.res_bus.vm_pu.min() and work.res_bus.vm_pu.max() <= 1.05 + 1e-9
    # the fixed three points alone: errors of the order docs/method.md predicts for ~0.1 MW shifts
    v = result.validation
    assert v.safe
    assert 1e-5 < v.vm_mae_pu < 2e-3
    assert v.loading_mae_percent < 1.0


def test_refinement_reaches_table1_within_three_rounds(setup):
    _, bids, lin = setup
    result = coordinate(lin, bids, REQUEST_MW, max_rounds=3, tol_vm_mae_pu=TABLE1["vm_mae"],
                        tol_loading_mae_percent=TABLE1["loading_mae"])
    last = result.rounds[-1]
    assert len(result.rounds) <= 4 and result.safe
    assert last.vm_mae_pu <= TABLE1["vm_mae"]
    assert last.vm_rmse_pu <= TABLE1["vm_rmse"]
    assert last.loading_mae_percent <= TABLE1["loading_mae"]
    assert last.loading_rmse_percent <= TABLE1["loading_rmse"]
    assert result.clearing.delivered_mw == pytest.approx(REQUEST_MW, abs=1e-6)
    # refining can only help the cost a little: the first clearing was nearly optimal
    assert last.cost_eur_per_h <= result.rounds[0].cost_eur_per_h + 1e-6


def test_cli_file_exchange_between_dso_and_tso(setup, tmp_path, capsys):
    net, bids, _ = setup
    grid = tmp_path / "GRID.json"
    assert cli_main(["grid", "build", "--out", str(grid)]) == 0
    write_bids(bids, tmp_path / "BIDS.csv")
    dso_dir, tso_dir = tmp_path / "dso", tmp_path / "tso"
    assert cli_main(["dso", "linearize", "--grid", str(grid), "--bids", str(tmp_path / "BIDS.csv"),
                     "--points", "0,0.5,1", "--screen", "--out", str(dso_dir / "pkg")]) == 0
    keymap = json.loads((dso_dir / "pkg.keymap.json").read_text())
    assert set(keymap["columns"]) == set(bids.ids)
    assert not list((dso_dir / "pkg").glob("*keymap*"))  # the key map stays beside the folder
    # the TSO gets the package folder and the bids; no key map, no grid
    tso_dir.mkdir()
    import shutil

    shutil.copytree(dso_dir / "pkg", tso_dir / "pkg")
    assert not list(tso_dir.glob("pkg/*private*"))  # the DSO's format-1 package stays home
    assert cli_main(["tso", "clear", "--package", str(tso_dir / "pkg"), "--bids",
                     str(tmp_path / "BIDS.csv"), "--request-mw", "1.8",
                     "--out", str(tso_dir / "CLEARING.json")]) == 0
    clearing = json.loads((tso_dir / "CLEARING.json").read_text())
    for key in ("status", "request_mw", "cost_eur_per_h", "operating_point", "activation_mw",
                "predicted_vm_pu", "predicted_loading_percent"):
        assert key in clearing
    assert clearing["status"] == "optimal" and clearing["request_mw"] == 1.8
    # format 2 (the default): no base values, so the TSO predicts nothing; the DSO does
    assert clearing["predicted_vm_pu"] == {} and clearing["predicted_loading_percent"] == {}
    # back at the DSO: validate, then refine and clear again
    shutil.copy(tso_dir / "CLEARING.json", dso_dir / "CLEARING.json")
    assert cli_main(["dso", "validate", "--grid", str(grid), "--bids", str(tmp_path / "BIDS.csv"),
                     "--clearing", str(dso_dir / "CLEARING.json"), "--keymap",
                     str(dso_dir / "pkg.keymap.json"), "--out", str(dso_dir / "REPORT.json")]) == 0
    report = json.loads((dso_dir / "REPORT.json").read_text())
    assert report["converged"] and report["safe"] and report["vm_mae_pu"] < 2e-3
    assert cli_main(["dso", "refine", "--grid", str(grid), "--bids", str(tmp_path / "BIDS.csv"),
                     "--package", str(dso_dir / "pkg"),
                     "--clearing", str(dso_dir / "CLEARING.json"),
                     "--out", str(dso_dir / "pkg2")]) == 0
    assert cli_main(["tso", "clear", "--package", str(dso_dir / "pkg2"), "--bids",
                     str(tmp_path / "BIDS.csv"), "--request-mw", "1.8",
                     "--out", str(dso_dir / "CLEARING2.json")]) == 0
    assert cli_main(["dso", "validate", "--grid", str(grid), "--bids", str(tmp_path / "BIDS.csv"),
                     "--clearing", str(dso_dir / "CLEARING2.json"), "--keymap",
                     str(dso_dir / "pkg2.keymap.json"),
                     "--out", str(dso_dir / "REPORT2.json")]) == 0
    report2 = json.loads((dso_dir / "REPORT2.json").read_text())
    assert report2["vm_mae_pu"] < report["vm_mae_pu"] / 10
    assert read_clearing(dso_dir / "CLEARING2.json").operating_point_label == "refine 1"
    # the same clearing on a grid whose lines carry 40 % less: the answer is "no" (exit 1)
    weak = pp.from_json(str(grid))
    weak.line["max_i_ka"] *= 0.6
    pp.to_json(weak, str(tmp_path / "WEAK.json"))
    assert cli_main(["dso", "validate", "--grid", str(tmp_path / "WEAK.json"), "--bids",
                     str(tmp_path / "BIDS.csv"), "--clearing", str(dso_dir / "CLEARING2.json"),
                     "--keymap", str(dso_dir / "pkg2.keymap.json"),
                     "--out", str(dso_dir / "REPORT3.json")]) == 1
    report3 = json.loads((dso_dir / "REPORT3.json").read_text())
    assert report3["converged"] and not report3["safe"] and report3["violations"]


def test_infeasible_request_on_the_cli_gives_a_diagnosis(setup, tmp_path, capsys):
    net, bids, lin = setup
    write_bids(bids, tmp_path / "BIDS.csv")
    from flexcore.exchange.package import save_package

    save_package(lin.linearize((0.0, 1.0)).package, tmp_path / "pkg")
    code = cli_main(["tso", "clear", "--package", str(tmp_path / "pkg"), "--bids",
                     str(tmp_path / "BIDS.csv"), "--request-mw", "10", "--allow-full-package",
                     "--out", str(tmp_path / "C.json")])
    assert code == 1
    clearing = json.loads((tmp_path / "C.json").read_text())
    assert clearing["status"] == "infeasible"
    assert 1.8 < clearing["diagnosis"]["max_deliverable_mw"] < 10
    assert clearing["diagnosis"]["binding_rows"]



# --------------------------------------------------------------------------- exit codes
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_exit_2_names_the_bad_input_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "houses.csv"
    bad.write_text("building_id,x_m,y_m,type\nA,0,0,castle\n")
    assert cli_main(["grid", "build", "--table", str(bad), "--out", str(tmp_path / "G.json")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("flexcosim: error: ") and str(bad) in line and "castle" in line
    missing = tmp_path / "nope.csv"
    assert cli_main(["grid", "build", "--table", str(missing), "--out",
                     str(tmp_path / "G.json")]) == 2
    assert str(missing) in _one_error_line(capsys.readouterr().err)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert cli_main(["run", "scenarios/bergwald.toml", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("bug", [KeyError("bus"), ValueError("a bug"), FileNotFoundError("x")])
def test_exit_3_prints_the_traceback_of_an_internal_error(monkeypatch, tmp_path, capsys, bug):
    """A plain exception is a bug, even a ValueError/KeyError: traceback and exit 3."""
    def broken(**_):
        raise bug

    monkeypatch.setattr(grids, "build_bergwald", broken)
    assert cli_main(["grid", "build", "--out", str(tmp_path / "G.json")]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert type(bug).__name__ in err and "flexcosim: error:" not in err


def test_exit_130_on_ctrl_c_without_a_traceback(monkeypatch, tmp_path, capsys):
    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(grids, "build_bergwald", interrupted)
    assert cli_main(["grid", "build", "--out", str(tmp_path / "G.json")]) == 130
    assert _one_error_line(capsys.readouterr().err) == "flexcosim: interrupted"


def test_cli_choices_come_from_the_enums():
    from flexcore.exchange.enums import Objective
    from flexcore.market import BACKENDS
    from scenarios.cli import build_parser

    clear = build_parser()._subparsers._group_actions[0].choices["tso"]
    clear = clear._subparsers._group_actions[0].choices["clear"]
    choices = {a.dest: a.choices for a in clear._actions if a.choices}
    assert tuple(choices["objective"]) == Objective.values()
    assert tuple(choices["backend"]) == BACKENDS


# --------------------------------------------------------------------------- pandapower internals
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_pandapower_internals_only_in_ppinternals():
    internals = [f.relative_to(ROOT).as_posix()
                 for pkg in ("flexcore", "agents", "simulators", "scenarios", "bench")
                 for f in sorted((ROOT / pkg).rglob("*.py"))
                 if "._ppc" in f.read_text() or "_pd2ppc_lookups" in f.read_text()]
    assert internals == ["flexcore/grid/ppinternals.py"], internals
