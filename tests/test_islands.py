"""Islands and bad grids: the DSO handles an island (buses cut off by an out-of-service line
or an open switch) and names every bad grid or building table in one line (exit 2).

Oracles: pandapower AC power flows (finite differences of the perturbed grid) for the
sensitivities of a grid with an island; the real MILP clearing; the command line run
in-process for the case folders ``tests/cases/bad_input/grid_*``.
"""
from __future__ import annotations

import copy
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from flexcore.dso import Linearizer
from flexcore.exchange.bids import BidTable
from flexcore.grid import grids, ppinternals, sensitivity
from flexcore.study.coordination import coordinate
from scenarios import cli

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "tests" / "cases" / "bad_input").glob("grid_*"))


def _feeder(*, island: str) -> pp.pandapowerNet:
    """MV slack, transformer, a 6-bus LV feeder 0-1-2-3 with a branch 2-4-5; the branch
    4-5 is cut off by ``island``: "line" (line 2-4 out of service) or "switch" (open)."""
    net = pp.create_empty_network(name="feeder")
    mv = pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, mv, vm_pu=1.02)
    lv = [pp.create_bus(net, 0.4, name=f"lv{k}") for k in range(6)]
    pp.create_transformer(net, mv, lv[0], "0.63 MVA 20/0.4 kV")
    lines = {}
    for a, b in ((0, 1), (1, 2), (2, 3), (2, 4), (4, 5)):
        lines[(a, b)] = pp.create_line(net, lv[a], lv[b], 0.15, "NAYY 4x150 SE")
    for k in (1, 2, 3, 4, 5):
        pp.create_load(net, lv[k], p_mw=0.03, q_mvar=0.01, name=f"B{k}")
    if island == "line":
        net.line.at[lines[(2, 4)], "in_service"] = False
    else:
        pp.create_switch(net, lv[2], lines[(2, 4)], et="l", closed=False)
    return net


def _bids(net) -> BidTable:
    # the cheapest bids sit on the island: a clearing that used them would deliver nothing
    buses = np.array([2, 3, 4, 5, 6], dtype=np.int64)  # lv1 .. lv5 (lv4, lv5: island)
    return BidTable(ids=tuple(f"b{b}" for b in buses), volume_mw=np.full(5, 0.02),
                    price_eur_per_mwh=np.array([60.0, 70.0, 80.0, 10.0, 20.0]), bus=buses)


@pytest.mark.parametrize("island", ["line", "switch"])
def test_island_sensitivities_match_ac_finite_differences(island):
    net = _feeder(island=island)
    bids = _bids(net)
    lin = Linearizer(net, bids, salt="islands")
    assert lin.isolated_buses == (5, 6)
    assert lin.undeliverable == (("b5", 5), ("b6", 6))
    rep = lin.linearize((0.0, 1.0))
    pkg = rep.package
    assert rep.undeliverable == lin.undeliverable
    assert "b5 (bus 5), b6 (bus 6)" in rep.as_text()
    # island columns are 0 and their activation is fixed to 0 at every point
    np.testing.assert_array_equal(pkg.vtdf[:, :, 3:], 0.0)
    np.testing.assert_array_equal(pkg.ltdf[:, :, 3:], 0.0)
    np.testing.assert_array_equal(pkg.p_flex_mw[1], [0.02, 0.02, 0.02, 0.0, 0.0])
    # supplied columns: pandapower AC power flows of the perturbed grid (base case)
    work = copy.deepcopy(net)
    pp.runpp(work)
    fd_v, fd_l = sensitivity.finite_differences(work, bids.bus[:3], h_mw=1e-4)
    np.testing.assert_allclose(pkg.vtdf[0][:, :3], fd_v[lin.row_positions.vm], atol=1e-7)
    np.testing.assert_allclose(pkg.ltdf[0][:, :3], fd_l[lin.row_positions.loading], rtol=1e-5)
    # rows: the 5 supplied buses (MV + 4 LV) and the supplied branches only
    assert len(pkg.vm_rows) == 5
    assert sorted(map(tuple, lin.keymap.loading_percent.values())) == [
        ("line", 0), ("line", 1), ("line", 2), ("trafo", 0)]


def test_extract_state_maps_rows_around_an_island():
    """The branch row map must skip branches into an island (was: IndexError)."""
    net = _feeder(island="line")
    # a second island line after the dropped ones shifts every later row
    pp.create_line(net, 4, 1, 0.1, "NAYY 4x150 SE")  # lv3 - lv0 (supplied, closes a loop)
    pp.runpp(net)
    state = ppinternals.extract_state(net, check=True)  # checks loadings against res_line
    (lines,) = [b for b in state.branches if b.element == "line"]
    assert lines.index.tolist() == [0, 1, 2, 5]
    fast = ppinternals.extract_fast_model(net, check=True)
    assert np.all(fast.bus_lookup[[5, 6]] >= len(fast.state.v))


def test_coordinate_never_clears_an_undeliverable_bid():
    net = _feeder(island="switch")
    bids = _bids(net)
    lin = Linearizer(net, bids, salt="islands")
    res = coordinate(lin, bids, 0.03)
    assert res.safe
    act = res.activation(bids.ids)
    np.testing.assert_array_equal(act[3:], 0.0)  # the cheap island bids are not used
    assert act[:3].sum() == pytest.approx(0.03)
    # the cheapest deliverable bids in price order: b2 full, b3 the rest
    np.testing.assert_allclose(act[:3], [0.02, 0.01, 0.0], atol=1e-9)


def test_grid_info_names_the_island(tmp_path, capsys):
    path = tmp_path / "island.json"
    pp.to_json(_feeder(island="line"), str(path))
    assert cli.main(["grid", "info", str(path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "isolated buses" in out and "2 (out of the model" in out and ": 5, 6" in out
    assert [ln.split() for ln in out.splitlines() if ln.startswith("radial")] == [["radial", "no"]]


def test_dso_linearize_names_island_bids(tmp_path, capsys):
    path = tmp_path / "island.json"
    pp.to_json(_feeder(island="switch"), str(path))
    b = _bids(None)
    (tmp_path / "bids.csv").write_text("id,bus,volume_mw,price_eur_per_mwh\n" + "".join(
        f"{i},{bus},{v},{p}\n" for i, bus, v, p in zip(b.ids, b.bus, b.volume_mw,
                                                        b.price_eur_per_mwh)))
    code = cli.main(["dso", "linearize", "--grid", str(path), "--bids",
                     str(tmp_path / "bids.csv"), "--out", str(tmp_path / "pkg")])
    out = capsys.readouterr().out
    assert code == 0
    assert "undeliverable" in out and "b5 (bus 5), b6 (bus 6)" in out
    assert "isolated buses" in out and "2: 5, 6" in out
    # the pipeline goes on: the TSO (all five bids offered, the island's the cheapest)
    # clears without them, the DSO's AC validation finds the clearing safe
    import json

    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["content"]["undeliverable"] == ["b5", "b6"]
    assert cli.main(["tso", "clear", "--package", str(tmp_path / "pkg"), "--bids",
                     str(tmp_path / "bids.csv"), "--request-mw", "0.03",
                     "--out", str(tmp_path / "CLEARING.json")]) == 0
    clearing = json.loads((tmp_path / "CLEARING.json").read_text())
    assert clearing["status"] == "optimal"
    act = clearing["activation_mw"]
    np.testing.assert_allclose([act[b] for b in ("b2", "b3", "b4", "b5", "b6")],
                               [0.02, 0.01, 0.0, 0.0, 0.0], atol=1e-9)
    assert cli.main(["dso", "validate", "--grid", str(path), "--bids",
                     str(tmp_path / "bids.csv"), "--clearing", str(tmp_path / "CLEARING.json"),
                     "--keymap", str(tmp_path / "pkg.keymap.json"),
                     "--out", str(tmp_path / "REPORT.json")]) == 0
    assert json.loads((tmp_path / "REPORT.json").read_text())["safe"]


def test_summary_radial_without_islands():
    net = _feeder(island="line")
    net.line.at[3, "in_service"] = True
    assert grids.summarize(net).isolated == ()
    assert grids.is_radial(net)


# ------------------------------------------------- case folders (until the shared runner)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(case, tmp_path, capsys):
    spec = tomllib.loads((case / "case.toml").read_text())
    args = [a.replace("{case}", str(case)).replace("{tmp}", str(tmp_path))
            .replace("{root}", str(ROOT)) for a in spec["command"]]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == spec["exit_code"], shlex.join(args) + "\n" + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexcosim: error:"), err
    assert spec["message"] in lines[0]
    assert "Traceback" not in err


def test_session_refuses_a_clearing_of_undeliverable_bids():
    """A TSO that ignored the package's ``undeliverable`` field (here: removed from the
    package) picks the cheap island bids: the DSO refuses that clearing instead of
    dispatching a delivery that cannot come."""
    from dataclasses import replace

    from flexcore.dso import RefinementSession
    from flexcore.exchange.enums import FrameVerdict
    from flexcore.market import clear

    net = _feeder(island="line")
    bids = _bids(net)
    lin = Linearizer(net, bids, salt="islands")
    session = RefinementSession(lin)
    published = session.open(lin.linearize((0.0, 1.0)).package)
    res = clear(replace(published, undeliverable=()), bids.without_bus(), 0.03)
    assert res.status == "optimal" and res.activation_mw["b5"] == pytest.approx(0.02)
    v = session.on_clearing(res)
    assert v.verdict == FrameVerdict.UNSAFE and not v.dispatch
    assert "undeliverable bid(s) on isolated buses (b5, b6)" in v.message


@pytest.mark.parametrize("privacy", ["full", "exact"])
def test_package_marks_island_bids_undeliverable_and_the_frame_clears(privacy, tmp_path):
    """The package names the island's bids (field ``undeliverable``, kept through the
    package folder); the TSO clears with every bid offered (it cannot see the island),
    activates none of them and the DSO's AC check accepts the clearing. Oracle: the
    hand-solvable merit order of the deliverable bids (b2 full, b3 the rest), pandapower
    AC at the activation (the session's validation)."""
    from flexcore.dso import RefinementSession
    from flexcore.dso.privacy import harden
    from flexcore.dso.refinement import Verdict
    from flexcore.exchange.enums import FrameVerdict
    from flexcore.exchange.package import load_package, save_package
    from flexcore.market import clear

    net = _feeder(island="switch")
    bids = _bids(net)
    lin = Linearizer(net, bids, salt="islands")
    session = RefinementSession(lin)
    full = session.open(lin.linearize((0.0, 1.0)).package)
    assert full.undeliverable == ("b5", "b6")
    step, rounds = full, 0
    while not isinstance(step, Verdict):  # every round: publish, TSO reads and clears
        box = lin.bids.subset(step.columns)
        sent = step if privacy == "full" else harden(step, lower_mw=box.lower_mw,
                                                     upper_mw=box.upper_mw)[0]
        read = load_package(save_package(sent, tmp_path / f"r{rounds}"), allow_full=True)
        assert read.undeliverable == ("b5", "b6")
        res = clear(read, bids.without_bus(), 0.03)  # the TSO's bids: island volumes intact
        assert res.status == "optimal"
        act = np.array([res.activation_mw[b] for b in bids.ids])
        np.testing.assert_allclose(act, [0.02, 0.01, 0.0, 0.0, 0.0], atol=1e-9)
        step, rounds = session.on_clearing(res), rounds + 1
    assert step.verdict == FrameVerdict.OPTIMAL and step.dispatch and step.safe
    # a bad field names itself
    from dataclasses import replace

    from flexcore.exchange.points import PackageError

    with pytest.raises(PackageError, match="undeliverable"):
        replace(full, undeliverable=("nope",))
