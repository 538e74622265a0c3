"""Tests of the TSO/market clearing (flexcore.market): hand-solved cases, backend agreement,
diagnosis, CLEARING.json I/O. Every optimum asserted here is computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import ClearingStatus, Objective
from flexcore.exchange.package import PointInfo, SensitivityPackage
from flexcore.market import (
    ClearingError,
    ClearingFileError,
    ClearingResult,
    clear,
    prepare,
    read_clearing,
    write_clearing,
)

SOLVERS = [("direct", "regions"), ("direct", "milp"), ("pyomo", "auto")]


def make_package(p_flex, *, vm=None, vtdf=None, ld=None, ltdf=None, columns=("A", "B")):
    """A package with explicit arrays; defaults: one neutral voltage and loading row."""
    p_flex = np.atleast_2d(np.asarray(p_flex, float))
    m, n = p_flex.shape
    vm = np.full((m, 1), 1.0) if vm is None else np.asarray(vm, float)
    vtdf = np.zeros((m, vm.shape[1], n)) if vtdf is None else np.asarray(vtdf, float)
    ld = np.zeros((m, 1)) if ld is None else np.asarray(ld, float)
    ltdf = np.zeros((m, ld.shape[1], n)) if ltdf is None else np.asarray(ltdf, float)
    return SensitivityPackage(
        columns=columns, vm_rows=[f"V{k}" for k in range(vm.shape[1])],
        loading_rows=[f"L{k}" for k in range(ld.shape[1])],
        points=[PointInfo(f"p{i}") for i in range(m)], p_flex_mw=p_flex, vm_pu=vm,
        loading_percent=ld, vtdf=vtdf, ltdf=ltdf)


def bids(vol, price, ids=("A", "B"), **kw) -> BidTable:
    return BidTable(ids=tuple(ids), volume_mw=np.array(vol, float),
                    price_eur_per_mwh=np.array(price, float), **kw)


def run(pkg, table, request, backend, method, **kw):
    return clear(pkg, table, request, backend=backend, method=method if backend == "direct"
                 else "auto", **kw)


# --------------------------------------------------------------------------- hand-solved
@pytest.mark.parametrize("backend,method", SOLVERS)
def test_merit_order_without_binding_rows(backend, method):
    pkg = make_package([[0.0, 0.0]])
    table = bids([1.0, 1.0], [20.0, 10.0])       # B is cheaper
    r = run(pkg, table, 1.5, backend, method)
    assert r.status == "optimal"
    assert r.activation_mw == pytest.approx({"A": 0.5, "B": 1.0}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(20.0)     # 1.0*10 + 0.5*20
    assert r.delivered_mw == pytest.approx(1.5)
    r = run(pkg, table, 0.5, backend, method)
    assert r.activation_mw == pytest.approx({"A": 0.0, "B": 0.5}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(5.0)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_binding_loading_row_forces_expensive_bid(backend, method):
    # L0 = 0 + 200 x_A  <= 100  ->  x_A <= 0.5
    pkg = make_package([[0.0, 0.0]], ld=[[0.0]], ltdf=[[[200.0, 0.0]]])
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = run(pkg, table, 1.0, backend, method)
    assert r.status == "optimal"
    assert r.activation_mw == pytest.approx({"A": 0.5, "B": 0.5}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(15.0)
    assert r.predicted_loading_percent["L0"] == pytest.approx(100.0)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_voronoi_selects_the_nearest_point(backend, method):
    # P0 = (0, 0), P1 = (1, 1): cell 0 is x_A + x_B <= 1. At P0 a line limits x_A <= 0.5;
    # at P1 (base 50 %, slope 50 %/MW) x_A may reach its volume.
    pkg = make_package([[0.0, 0.0], [1.0, 1.0]], ld=[[0.0], [50.0]],
                       ltdf=[[[200.0, 0.0]], [[50.0, 0.0]]])
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = run(pkg, table, 0.8, backend, method)    # in cell 0: the cheaper point 1 is not allowed
    assert (r.status, r.operating_point, r.operating_point_label) == ("optimal", 0, "p0")
    assert r.activation_mw == pytest.approx({"A": 0.5, "B": 0.3}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(11.0)
    r = run(pkg, table, 1.6, backend, method)    # cell 1
    assert r.operating_point == 1
    assert r.activation_mw == pytest.approx({"A": 1.0, "B": 0.6}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(22.0)
    # prediction is relative to the selected point: L = 50 + 50 * (1.0 - 1.0)
    assert r.predicted_loading_percent["L0"] == pytest.approx(50.0)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_signed_cost_buys_back_downward_bid_abs_cost_does_not(backend, method):
    pkg = make_package([[0.0, 0.0]], columns=("A", "D"))
    table = bids([1.0, -1.0], [10.0, 30.0], ids=("A", "D"))
    r = run(pkg, table, 0.5, backend, method, objective="abs_cost")
    assert r.activation_mw == pytest.approx({"A": 0.5, "D": 0.0}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(5.0) and r.objective == pytest.approx(5.0)
    # literal c^T x: 10 x_A + 30 x_D, x_A + x_D = 0.5 -> x_A = 1, x_D = -0.5, objective -5
    r = run(pkg, table, 0.5, backend, method, objective="signed_cost")
    assert r.activation_mw == pytest.approx({"A": 1.0, "D": -0.5}, abs=1e-9)
    assert r.objective == pytest.approx(-5.0)
    assert r.cost_eur_per_h == pytest.approx(25.0)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_min_size_and_indivisible_bids(backend, method):
    pkg = make_package([[0.0, 0.0]])
    semi = bids([1.0, 1.0], [10.0, 20.0], min_mw=[0.6, 0.0])
    r = run(pkg, semi, 0.5, backend, method)       # A cannot run at 0.5 < 0.6
    assert r.activation_mw == pytest.approx({"A": 0.0, "B": 0.5}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(10.0)
    r = run(pkg, semi, 0.8, backend, method)
    assert r.activation_mw == pytest.approx({"A": 0.8, "B": 0.0}, abs=1e-9)
    block = bids([0.6, 1.0], [10.0, 20.0], indivisible=[True, False])
    r = run(pkg, block, 0.5, backend, method)      # A all-or-nothing 0.6 > 0.5
    assert r.activation_mw == pytest.approx({"A": 0.0, "B": 0.5}, abs=1e-9)
    r = run(pkg, block, 0.8, backend, method)      # 0.6*10 + 0.2*20 = 10 < 0.8*20 = 16
    assert r.activation_mw == pytest.approx({"A": 0.6, "B": 0.2}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(10.0)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_infeasible_request_is_diagnosed(backend, method):
    pkg = make_package([[0.0, 0.0]], ld=[[0.0]], ltdf=[[[200.0, 0.0]]])
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = run(pkg, table, 2.0, backend, method)     # at most 0.5 (line) + 1.0 = 1.5
    assert r.status == "infeasible" and not r.ok
    assert r.activation_mw == {} and r.delivered_mw is None
    d = r.diagnosis
    assert d.max_deliverable_mw == pytest.approx(1.5)
    assert d.min_deliverable_mw == pytest.approx(0.0)
    assert d.binding_rows == ["L0"]
    assert d.base_violated_rows == {}
    assert "1.5" in r.message and "L0" in r.message
    r = run(pkg, table, -0.1, backend, method)    # no downward bid
    assert r.status == "infeasible"
    assert r.diagnosis.min_deliverable_mw == pytest.approx(0.0)


def test_base_violated_row_is_reported():
    # V0 = 1.06 > 1.05 at the only point and no bid moves it: every request is infeasible
    pkg = make_package([[0.0, 0.0]], vm=[[1.06]])
    r = clear(pkg, bids([1.0, 1.0], [10.0, 20.0]), 0.5)
    assert r.status == "infeasible"
    assert r.diagnosis.base_violated_rows == {"p0": ["V0"]}
    assert r.diagnosis.max_deliverable_mw is None
    assert "V0" in r.message
    # a downward bid that lowers the voltage repairs it: 1.06 + 0.05 x_D <= 1.05 -> x_D <= -0.2
    pkg = make_package([[0.0, 0.0]], vm=[[1.06]], vtdf=[[[0.0, 0.05]]], columns=("A", "D"))
    r = clear(pkg, bids([1.0, -1.0], [10.0, 30.0], ids=("A", "D")), 0.0)
    assert r.status == "optimal"
    assert r.activation_mw == pytest.approx({"A": 0.2, "D": -0.2}, abs=1e-9)


def test_zero_request_needs_no_solver_and_matches_it():
    # points at 0 and at (1, 1), and a refinement at 0 again: "nothing" is optimal, answered
    # from the most recent zero point without a solver; the solved MILP agrees (objective 0)
    pkg = make_package([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]], vm=[[1.01], [1.03], [1.02]],
                       vtdf=[[[0.01, 0.02]]] * 3)
    table = bids([1.0, -1.0], [10.0, 30.0])
    r = clear(pkg, table, 0.0)
    assert (r.status, r.method, r.operating_point) == ("optimal", "zero", 2)
    assert r.activation_mw == {"A": 0.0, "B": 0.0} and r.cost_eur_per_h == 0.0
    assert r.predicted_vm_pu == {"V0": pytest.approx(1.02)}
    solved = clear(pkg, table, 0.0, backend="pyomo", extra_constraints=lambda model: None)
    assert solved.status == "optimal" and solved.method != "zero"
    assert solved.objective == pytest.approx(0.0, abs=1e-9)
    assert solved.activation_mw == pytest.approx(r.activation_mw, abs=1e-9)


@pytest.mark.parametrize("backend,method", SOLVERS)
def test_zero_request_with_negative_price_is_solved(backend, method):
    # A pays 10 EUR/MWh to be activated, D costs 5: 0 MW net, yet x_A = 1, x_D = -1 earns 5
    pkg = make_package([[0.0, 0.0]], columns=("A", "D"))
    r = run(pkg, bids([1.0, -1.0], [-10.0, 5.0], ids=("A", "D")), 0.0, backend, method)
    assert r.status == "optimal" and r.method != "zero"
    assert r.activation_mw == pytest.approx({"A": 1.0, "D": -1.0}, abs=1e-9)
    assert r.objective == pytest.approx(-5.0)


# --------------------------------------------------------------------------- agreement
def random_case(n=50, m=3, v=40, l=40, seed=0, blocks=False):
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.005, 0.03, n) * np.where(rng.random(n) < 0.8, 1, -1)
    frac = np.linspace(1, 0, m)
    pf = frac[:, None] * np.maximum(vol, 0)[None, :]
    ids = [f"b{k:03d}" for k in range(n)]
    pkg = SensitivityPackage(
        columns=ids, vm_rows=[f"v{k}" for k in range(v)], loading_rows=[f"l{k}" for k in range(l)],
        points=[PointInfo(f"p{i}", float(frac[i])) for i in range(m)], p_flex_mw=pf,
        vm_pu=1.0 + rng.normal(0, 0.01, (m, v)), loading_percent=rng.uniform(-80, 80, (m, l)),
        vtdf=rng.uniform(0, 0.05, (m, v, n)), ltdf=rng.normal(0, 100, (m, l, n)))
    kw = {}
    if blocks:
        kw = {"min_mw": np.where(rng.random(n) < 0.2, 0.5 * np.abs(vol), 0.0),
              "indivisible": rng.random(n) < 0.1}
    # shuffled order: clear() must realign by id
    order = rng.permutation(n)
    table = BidTable(ids=tuple(ids[k] for k in order), volume_mw=vol[order],
                     price_eur_per_mwh=rng.uniform(20, 200, n)[order],
                     **{k: a[order] for k, a in kw.items()})
    return pkg, table


@pytest.mark.parametrize("objective", ["abs_cost", "signed_cost", "abs_cost_proximity"])
@pytest.mark.parametrize("blocks", [False, True])
def test_backends_agree_on_random_case(objective, blocks):
    pkg, table = random_case(seed=3 if blocks else 1, blocks=blocks)
    results = [run(pkg, table, 0.25, b, mth, objective=objective) for b, mth in SOLVERS]
    results.append(clear(pkg, table, 0.25, method="milp", prefilter=False, objective=objective))
    ref = results[0]
    assert ref.status == "optimal"
    for r in results[1:]:
        assert r.status == "optimal"
        assert r.objective == pytest.approx(ref.objective, rel=1e-6)
        assert r.operating_point == ref.operating_point
        a, b = (np.array([res.activation_mw[c] for c in pkg.columns]) for res in (ref, r))
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert ref.delivered_mw == pytest.approx(0.25)


@pytest.mark.parametrize("blocks", [False, True])
def test_bids_without_volume_are_left_out_exactly(blocks):
    # half the bids offer nothing this frame: their columns are fixed at 0 and dropped
    # before HiGHS (direct) but kept in the pyomo model; both give the same optimum
    pkg, table = random_case(seed=5, blocks=blocks)
    vol = table.volume_mw.copy()
    vol[::2] = 0.0
    table = BidTable(ids=table.ids, volume_mw=vol, price_eur_per_mwh=table.price_eur_per_mwh,
                     min_mw=np.where(vol == 0, 0.0, table.min_mw), indivisible=table.indivisible)
    ref = clear(pkg, table, 0.1, backend="pyomo")
    assert ref.status == "optimal"
    for method in ("regions", "milp"):
        r = clear(pkg, table, 0.1, method=method)
        assert r.objective == pytest.approx(ref.objective, rel=1e-6)
        assert all(r.activation_mw[b] == 0.0 for b in np.array(table.ids)[::2])
        assert r.delivered_mw == pytest.approx(0.1)


def test_prefilter_drops_rows_and_warm_start_reproduces():
    pkg, table = random_case(seed=1)
    kept = sum(len(b.rows) for b in prepare(pkg, table, 0.25).blocks)
    assert kept < pkg.m * (len(pkg.vm_rows) + len(pkg.loading_rows))
    r1 = clear(pkg, table, 0.25, method="milp")
    r2 = clear(pkg, table, 0.25, method="milp", warm_start=r1)
    assert r2.objective == pytest.approx(r1.objective, rel=1e-9)


def test_extra_constraints_hook():
    import pyomo.environ as pyo

    pkg = make_package([[0.0, 0.0]])
    table = bids([1.0, 1.0], [10.0, 20.0])

    def no_a(model):
        model.no_a = pyo.Constraint(expr=model.x["A"] == 0)

    r = clear(pkg, table, 0.5, backend="pyomo", extra_constraints=no_a)
    assert r.activation_mw == pytest.approx({"A": 0.0, "B": 0.5}, abs=1e-9)
    with pytest.raises(ClearingError, match="pyomo"):
        clear(pkg, table, 0.5, extra_constraints=no_a)


def test_bid_mismatch_names_ids():
    pkg = make_package([[0.0, 0.0]])
    with pytest.raises(ClearingError, match=r"\['B'\].*\['C'\]"):
        clear(pkg, bids([1.0, 1.0], [10.0, 20.0], ids=("A", "C")), 0.5)
    with pytest.raises(ClearingError, match="objective"):
        clear(pkg, bids([1.0, 1.0], [10.0, 20.0]), 0.5, objective="nope")


def test_status_and_objective_are_enums_and_strings():
    pkg = make_package([[0.0, 0.0]])
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = clear(pkg, table, 0.5, objective=Objective.SIGNED_COST)
    assert r.status is ClearingStatus.OPTIMAL and r.status == "optimal" and r.ok
    assert r.objective_name == "signed_cost"
    assert clear(pkg, table, 0.5, objective="signed_cost").objective == r.objective
    # a bad string is a FlexcosimError (ClearingError) naming every choice
    with pytest.raises(FlexcosimError, match="abs_cost_proximity"):
        clear(pkg, table, 0.5, objective="cheapest")
    assert ClearingResult(status="infeasible", request_mw=1.0).status \
        is ClearingStatus.INFEASIBLE
    with pytest.raises(ClearingError, match="time_limit"):
        ClearingResult(status="great", request_mw=1.0)


# --------------------------------------------------------------------------- CLEARING.json
def test_clearing_json_round_trip_and_tampering(tmp_path):
    pkg = make_package([[0.0, 0.0]], ld=[[0.0]], ltdf=[[[200.0, 0.0]]])
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = clear(pkg, table, 1.0)
    path = write_clearing(r, tmp_path / "CLEARING.json")
    d = json.loads(path.read_text())
    assert (d["format"], d["version"]) == ("flexcosim-clearing", 2)
    assert d["status"] == "optimal" and type(r.to_json_dict()["status"]) is str
    assert read_clearing(path) == r
    assert read_clearing(path).status is ClearingStatus.OPTIMAL
    bad = clear(pkg, table, 5.0)                       # infeasible, with a diagnosis
    write_clearing(bad, tmp_path / "bad.json")
    back = read_clearing(tmp_path / "bad.json")
    assert back == bad and back.diagnosis.binding_rows == ["L0"]

    def tampered(change, match):
        dd = json.loads(path.read_text())
        change(dd)
        p = tmp_path / "t.json"
        p.write_text(json.dumps(dd))
        with pytest.raises(ClearingFileError, match=match):
            read_clearing(p)

    tampered(lambda dd: dd.update(delivered_mw=2.0), "delivered_mw")
    tampered(lambda dd: dd["activation_mw"].update(A="x"), "activation_mw.A")
    tampered(lambda dd: dd.pop("cost_eur_per_h"), "cost_eur_per_h")
    tampered(lambda dd: dd.update(status="great"), "status")
    tampered(lambda dd: dd.update(version=3), "version")
    tampered(lambda dd: dd.update(version=True), "version")
    tampered(lambda dd: dd.update(format="other"), "format")
    tampered(lambda dd: dd.update(operating_point=-1), "operating_point")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ClearingFileError, match="not valid JSON"):
        read_clearing(tmp_path / "junk.json")


# a version-1 CLEARING.json as written before the cost rate was renamed (by hand: A fully
# active at 10 EUR/MWh, B half at 20 EUR/MWh -> 1.0*10 + 0.5*20 = 20 EUR/h under "cost_eur")
V1_CLEARING = """{"format": "flexcosim-clearing", "version": 1, "status": "optimal",
 "request_mw": 1.5, "message": "", "delivered_mw": 1.5, "cost_eur": 20.0, "objective": 20.0,
 "operating_point": 0, "operating_point_label": "p0", "activation_mw": {"A": 1.0, "B": 0.5},
 "predicted_vm_pu": {"V0": 1.0}, "predicted_loading_percent": {"L0": 0.0},
 "backend": "direct", "method": "regions", "objective_name": "abs_cost",
 "build_time_s": 0.0, "solve_time_s": 0.0, "diagnosis": null}"""


def test_version_1_clearing_reads_its_cost_eur_as_the_rate(tmp_path):
    path = tmp_path / "CLEARING.json"
    path.write_text(V1_CLEARING)
    old = read_clearing(path)
    assert old.cost_eur_per_h == 20.0 and old.activation_mw == {"A": 1.0, "B": 0.5}
    # the same clearing today: the same rate, under the version-2 key
    now = clear(make_package([[0.0, 0.0]]), bids([1.0, 1.0], [10.0, 20.0]), 1.5)
    assert now.cost_eur_per_h == pytest.approx(old.cost_eur_per_h)
    d = json.loads(write_clearing(old, tmp_path / "v2.json").read_text())
    assert d["version"] == 2 and d["cost_eur_per_h"] == 20.0 and "cost_eur" not in d
    assert read_clearing(tmp_path / "v2.json") == old
    # each version with its own key: version 1 has no cost_eur_per_h, version 2 no cost_eur
    for version, drop, add in ((1, None, "cost_eur_per_h"), (2, "cost_eur_per_h", "cost_eur")):
        dd = json.loads(V1_CLEARING if version == 1 else (tmp_path / "v2.json").read_text())
        dd.pop(drop, None)
        dd[add] = 20.0
        path.write_text(json.dumps(dd))
        with pytest.raises(ClearingFileError, match=rf"field '{add}' is not a field of "
                                                    rf"version {version}"):
            read_clearing(path)
    dd = json.loads(V1_CLEARING)
    dd.pop("cost_eur")
    path.write_text(json.dumps(dd))
    with pytest.raises(ClearingFileError, match="missing field 'cost_eur'$"):
        read_clearing(path)


def test_highs_numerical_trouble_is_an_error_not_a_time_limit():
    """HiGHS treats |cost| >= 1e20 as infinite and returns model status Unknown: that is
    named as numerical difficulties, never as a time limit (none was set)."""
    import scipy.sparse as sp

    from flexcore.market.direct import LinearProgram, solve_highs

    def lp(cost_a):  # min cost_a x_a + x_b, x_a + x_b = 1.5, 0 <= x <= 1
        return LinearProgram(np.array([cost_a, 1.0]), np.zeros(2), np.ones(2),
                             sp.csr_matrix(np.ones((1, 2))), np.array([1.5]), np.array([1.5]),
                             np.zeros(2, np.int8))

    ok = solve_highs(lp(2.0))
    assert ok.status == ClearingStatus.OPTIMAL and not ok.time_limit_hit
    assert ok.x == pytest.approx([0.5, 1.0]) and ok.objective == pytest.approx(2.0)
    bad = solve_highs(lp(1e300))
    assert bad.status == ClearingStatus.ERROR and not bad.time_limit_hit
    assert "numerical difficulties (HiGHS status Unknown)" in bad.message
    assert bad.x is None


def test_price_at_the_cap_clears_exactly():
    """1e6 EUR/MWh (the plausibility cap) still solves: request 1 MW from A (1e6 EUR/MWh,
    1 MW) and B (1 EUR/MWh, 0.6 MW): B full, A 0.4 MW, cost 0.6 + 4e5 EUR/h."""
    bids = BidTable(ids=("A", "B"), volume_mw=np.array([1.0, 0.6]),
                    price_eur_per_mwh=np.array([1e6, 1.0]))
    for backend, method in SOLVERS:
        res = clear(make_package([[0.0, 0.0]]), bids, 1.0, backend=backend, method=method)
        assert res.status == ClearingStatus.OPTIMAL, (backend, res.message)
        assert res.activation_mw == pytest.approx({"A": 0.4, "B": 0.6}, abs=1e-7)
        assert res.cost_eur_per_h == pytest.approx(400000.6, rel=1e-9)


# --------------------------------------------------------------------------- format 2
@pytest.mark.parametrize("backend,method", SOLVERS)
def test_hardened_package_rows_on_the_activation(backend, method):
    """Format 2 written by hand: 2 x_A <= 1 (x_A <= 0.5) at P0 = (0, 0); P1 = (1, 1) is
    excluded. Same optimum as the format-1 line of test_binding_loading_row_forces_...,
    no predictions."""
    from flexcore.exchange.hardened import HardenedPackage

    pkg = HardenedPackage(privacy="exact", columns=("B", "A"),
                          points=(PointInfo("p0"), PointInfo("p1")),
                          p_flex_mw=[[0.0, 0.0], [1.0, 1.0]],
                          rows_a=(np.array([[0.0, 2.0]]), np.zeros((0, 2))),
                          rows_rhs=(np.array([1.0]), np.zeros(0)), excluded=(1,))
    table = bids([1.0, 1.0], [10.0, 20.0])
    r = run(pkg, table, 0.9, backend, method)
    assert (r.status, r.operating_point_label) == ("optimal", "p0")
    assert r.activation_mw == pytest.approx({"A": 0.5, "B": 0.4}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(13.0)
    assert r.predicted_vm_pu == {} and r.predicted_loading_percent == {}
    # 1.2 MW lies only in region 1 (x_A + x_B > 1), which is excluded
    r = run(pkg, table, 1.2, backend, method)
    assert r.status == "infeasible"
    assert r.diagnosis.max_deliverable_mw == pytest.approx(1.0)
    assert r.diagnosis.region_ranges[1] == ["p1", None, None]
