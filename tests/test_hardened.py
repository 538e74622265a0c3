"""Package format 2 (the hardened package): same optimum as format 1 on real grids, the
normalised rows, excluded regions, shuffling, and the privacy audit of what is published.

Oracles: the format-1 clearing of the same package (every cost compared to 1e-7), hand-
solved cases, and the independent attacker of flexcore.dso.audit scored against the grid.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from flexcore.district.buildings import load_building_table
from flexcore.dso import audit as A
from flexcore.dso.keymap import KeyMap
from flexcore.dso.linearizer import Linearizer
from flexcore.dso.privacy import harden
from flexcore.dso.refinement import RefinementPolicy, RefinementSession, Verdict
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import ClearingStatus, PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import PackageError, PointInfo, SensitivityPackage
from flexcore.grid.grids import load_grid
from flexcore.market import clear
from flexcore.study.bidgen import synthetic_bids
from tests.grid_helpers import meshed as grid_meshed

SIMBENCH = "simbench:1-LV-semiurb4--0-sw"
REL = 1e-7


def _harden(pkg: SensitivityPackage, bids: BidTable, seed: int = 0):
    b = bids.subset(pkg.columns)
    return harden(pkg, lower_mw=b.lower_mw, upper_mw=b.upper_mw,
                  rng=np.random.default_rng(seed))


def _case(net, bids):
    lin = Linearizer(net, bids)
    pkg = lin.linearize((0, 0.5, 1)).package
    hard, key = _harden(pkg, bids)
    return net, bids, lin, pkg, hard, key


@pytest.fixture(scope="module")
def bergwald():
    net = load_grid("bergwald")
    return _case(net, synthetic_bids(net, seed=1, table=load_building_table()))


def _stressed_bids(net) -> BidTable:
    """Synthetic bids, 30 % downward, three times the single-house volume: enough that
    voltage and loading limits bind within the bids' range in the SimBench LV grid."""
    b = synthetic_bids(net, seed=2, downward_share=0.3)
    return BidTable(ids=b.ids, volume_mw=3.0 * b.volume_mw,
                    price_eur_per_mwh=b.price_eur_per_mwh, bus=b.bus)


@pytest.fixture(scope="module")
def simbench():
    net = load_grid(SIMBENCH)
    return _case(net, _stressed_bids(net))


@pytest.fixture(scope="module")
def meshed():
    net = grid_meshed(load_grid(SIMBENCH))
    return _case(net, _stressed_bids(net))


def _assert_same(pkg, hard, bids, request, **kw):
    r1 = clear(pkg, bids, request, **kw)
    r2 = clear(hard, bids, request, **kw)
    assert r2.status == r1.status, (request, r1.message, r2.message)
    if r1.ok:
        assert r2.cost_eur_per_h == pytest.approx(r1.cost_eur_per_h, rel=REL, abs=1e-9)
        assert r2.delivered_mw == pytest.approx(request, abs=1e-7)
        assert r2.operating_point_label == hard.points[r2.operating_point].label
        assert not r2.predicted_vm_pu and not r2.predicted_loading_percent
        assert set(r2.activation_mw) == set(pkg.columns)
    return r1, r2


# --------------------------------------------------------------------------- same optimum
def test_bergwald_same_optimum(bergwald):
    _, bids, _, pkg, hard, _ = bergwald
    r1, r2 = _assert_same(pkg, hard, bids, 1.8)
    assert r1.status == "optimal" and r1.cost_eur_per_h > 0
    for request in (0.5, 1.2):
        assert _assert_same(pkg, hard, bids, request)[0].status == "optimal"
    # all bids are upward: a downward request is infeasible both ways, so is a huge one
    for request in (-0.3, 50.0):
        r1, r2 = _assert_same(pkg, hard, bids, request)
        assert r1.status == r2.status == ClearingStatus.INFEASIBLE
        assert r2.diagnosis is not None and r2.diagnosis.max_deliverable_mw == pytest.approx(
            r1.diagnosis.max_deliverable_mw, rel=1e-6)
    # the full MILP agrees with the regions on format 2
    r3 = clear(hard, bids, 1.8, method="milp")
    assert r3.cost_eur_per_h == pytest.approx(r1.cost_eur_per_h if r1.ok else
                                        clear(pkg, bids, 1.8).cost_eur_per_h, rel=1e-6)


@pytest.mark.parametrize("case", ["simbench", "meshed"])
def test_simbench_and_meshed_same_optimum(case, request):
    _, bids, _, pkg, hard, _ = request.getfixturevalue(case)
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    down = float(bids.volume_mw[bids.volume_mw < 0].sum())
    ok = 0
    for req in (0.2 * up, 0.5 * up, 0.3 * down):
        r1, _ = _assert_same(pkg, hard, bids, req)
        ok += r1.status == "optimal"
    assert ok == 3
    # 0.8 of the upward volume: the grid limits stop it; 1.5: beyond the bids' volume
    for req in (0.8 * up, 1.5 * up, 1.5 * down):
        r1, r2 = _assert_same(pkg, hard, bids, req)
        assert r1.status == r2.status == ClearingStatus.INFEASIBLE
    assert sum(hard.row_counts) > 10      # the limits do bind: rows are published


def test_hardened_is_smaller_and_has_no_base_values(bergwald):
    _, _, _, pkg, hard, key = bergwald
    assert hard.privacy == PrivacyLevel.EXACT
    arrays = hard.arrays()
    assert set(arrays) == {"p_flex_mw"} | {f"{p}_{i}" for i in range(hard.m)
                                           for p in ("a", "rhs")}
    for i in range(hard.m):
        assert set(np.unique(hard.rows_rhs[i])) <= {-1.0, 0.0, 1.0}
    # no base voltage or loading appears anywhere in the published numbers
    published = np.concatenate([a.ravel() for a in arrays.values()])
    base = np.concatenate([pkg.vm_pu.ravel(), pkg.loading_percent.ravel()])
    base = base[np.abs(base) > 1e-3]
    assert not np.isin(np.round(base, 9), np.round(published, 9)).any()
    # only rows that can bind: far fewer than the 2 * (v + l) sides of format 1
    total = 2 * (len(pkg.vm_rows) + len(pkg.loading_rows))
    assert sum(hard.row_counts) < 0.1 * total * hard.m
    assert hard.screening["sides_total"] == total * hard.m
    fields = json.loads(json.dumps(hard.manifest_fields()))   # JSON-able
    assert "limits" not in fields and "vm_rows" not in fields
    back = HardenedPackage.from_parts(fields, arrays)
    assert back.columns == hard.columns and back.excluded == hard.excluded
    assert all(np.array_equal(a, b) for a, b in zip(back.rows_a, hard.rows_a))
    # the key maps every published row back to a format-1 row and side
    for i, rows in enumerate(key.rows):
        assert len(rows) == hard.row_counts[i]
        for r in rows:
            assert r.point == i and r.side in ("upper", "lower")
            assert r.key in pkg.vm_rows or r.key in pkg.loading_rows


def test_random_order_and_salt_differ_per_publication(bergwald):
    _, bids, _, pkg, hard, key = bergwald
    hard2, key2 = _harden(pkg, bids, seed=1)
    assert hard2.columns != hard.columns and sorted(hard2.columns) == sorted(hard.columns)
    assert key2.salt != key.salt and len(key.salt) >= 32
    i = int(np.argmax(hard.row_counts))
    assert hard.row_counts[i] > 1
    assert [r.key for r in key.rows[i]] != [r.key for r in key2.rows[i]]
    # the same constraints, only shuffled: compare in format-1 column order
    def canon(h, k):
        inv = np.argsort(k.column_order)
        return sorted(map(tuple, np.round(np.c_[h.rows_a[i][:, inv], h.rows_rhs[i]], 9)))
    assert canon(hard, key) == canon(hard2, key2)
    # the same rhs for the same row regardless of the rng
    assert clear(hard2, bids, 1.8).cost_eur_per_h == pytest.approx(
        clear(hard, bids, 1.8).cost_eur_per_h, rel=REL)


# --------------------------------------------------------------------------- hand cases
def _pkg(p_flex, vm, vtdf, columns=("A", "B")):
    p_flex = np.atleast_2d(np.asarray(p_flex, float))
    m, n = p_flex.shape
    vm = np.asarray(vm, float).reshape(m, -1)
    return SensitivityPackage(
        columns=columns, vm_rows=[f"V{k}" for k in range(vm.shape[1])], loading_rows=["L0"],
        points=[PointInfo(f"p{i}") for i in range(m)], p_flex_mw=p_flex, vm_pu=vm,
        loading_percent=np.zeros((m, 1)), vtdf=np.asarray(vtdf, float).reshape(m, -1, n),
        ltdf=np.zeros((m, 1, n)))


def _bids(vol, price):
    return BidTable(ids=("A", "B"), volume_mw=np.array(vol, float),
                    price_eur_per_mwh=np.array(price, float))


@pytest.mark.parametrize("backend,method", [("direct", "regions"), ("direct", "milp"),
                                            ("pyomo", "auto")])
def test_rows_past_and_at_their_limit(backend, method):
    # V0 = 1.06 - 0.02 x_A <= 1.05: already past the limit at x = 0 -> -2 x_A <= -1 (rhs -1)
    # V1 = 1.05 + 0.02 (x_A - x_B) <= 1.05: exactly at it -> (x_A - x_B)/sqrt 2 <= 0 (rhs 0)
    pkg = _pkg([[0.0, 0.0]], [[1.00, 1.06, 1.05]],
               [[[0.0, 0.0], [-0.02, 0.0], [0.02, -0.02]]])
    table = _bids([1.0, 1.0], [10.0, 20.0])           # A is cheaper
    hard, key = _harden(pkg, table)
    rows = {(r.key, r.side): k for k, r in enumerate(key.rows[0])}
    assert set(rows) == {("V1", "upper"), ("V2", "upper")}   # V0 and lower sides cannot bind
    a, rhs = hard.rows_a[0], hard.rows_rhs[0]
    inv = np.argsort(key.column_order)
    assert rhs[rows["V1", "upper"]] == -1.0
    assert a[rows["V1", "upper"]][inv] == pytest.approx([-2.0, 0.0])
    assert rhs[rows["V2", "upper"]] == 0.0
    assert a[rows["V2", "upper"]][inv] == pytest.approx([2 ** -0.5, -(2 ** -0.5)])
    kw = dict(backend=backend, method=method if backend == "direct" else "auto")
    r = clear(hard, table, 1.2, **kw)
    # x_A >= 0.5, x_A <= x_B, x_A + x_B = 1.2 -> x_A = 0.6 (A cheap), x_B = 0.6
    assert r.status == "optimal"
    assert r.activation_mw == pytest.approx({"A": 0.6, "B": 0.6}, abs=1e-9)
    assert r.cost_eur_per_h == pytest.approx(18.0)
    assert clear(pkg, table, 1.2, **kw).cost_eur_per_h == pytest.approx(18.0)
    # 0.8 MW: x_A >= 0.5 and x_A <= x_B need x_B >= 0.5 -> 1.0 MW at least: infeasible
    r = clear(hard, table, 0.8, **kw)
    assert r.status == ClearingStatus.INFEASIBLE
    assert clear(pkg, table, 0.8, **kw).status == ClearingStatus.INFEASIBLE
    # the zero request is not trivially met (the base violates V1): infeasible too
    assert clear(hard, table, 0.0, **kw).status == ClearingStatus.INFEASIBLE
    d = clear(hard, table, 0.8, **kw).diagnosis
    assert d is not None and d.min_deliverable_mw == pytest.approx(1.0)
    assert d.base_violated_rows == {"p0": [f"p0#{rows['V1', 'upper']}"]}


def test_region_infeasible_on_its_own_is_excluded():
    # P0 = (0, 0) fine; P1 = (1, 1) has a voltage of 1.2 p.u. that no activation moves
    pkg = _pkg([[0.0, 0.0], [1.0, 1.0]], [[1.0], [1.2]], [[[0.0, 0.0]], [[0.0, 0.0]]])
    table = _bids([1.0, 1.0], [10.0, 20.0])
    hard, key = _harden(pkg, table)
    assert hard.excluded == (1,) and key.excluded == (1,) and hard.row_counts[1] == 0
    assert hard.screening["points_excluded"] == 1
    for backend, method in (("direct", "regions"), ("direct", "milp"), ("pyomo", "auto")):
        r = clear(hard, table, 1.5, backend=backend, method=method)
        r1 = clear(pkg, table, 1.5, backend=backend, method=method)
        # cell 0 is x_A + x_B <= 1: 1.5 MW only in region 1, which is excluded
        assert r.status == r1.status == ClearingStatus.INFEASIBLE
        r = clear(hard, table, 0.8, backend=backend, method=method)
        assert (r.status, r.operating_point, r.cost_eur_per_h) == ("optimal", 0, pytest.approx(
            clear(pkg, table, 0.8, backend=backend, method=method).cost_eur_per_h))
    d = clear(hard, table, 1.5).diagnosis
    assert d.region_ranges[1] == ["p1", None, None]


def test_from_parts_names_the_culprit():
    pkg = _pkg([[0.0, 0.0]], [[1.06]], [[[-0.02, 0.0]]])
    hard, _ = _harden(pkg, _bids([1.0, 1.0], [10.0, 20.0]))
    fields, arrays = hard.manifest_fields(), dict(hard.arrays())
    bad = dict(arrays, rhs_0=np.array([0.5]))
    with pytest.raises(PackageError, match=r"rhs_0.*-1, 0 or 1"):
        HardenedPackage.from_parts(fields, bad)
    with pytest.raises(PackageError, match=r"a_0.*shape"):
        HardenedPackage.from_parts(fields, dict(arrays, a_0=np.zeros((1, 3))))
    with pytest.raises(PackageError, match="missing"):
        HardenedPackage.from_parts(fields, {"p_flex_mw": arrays["p_flex_mw"]})
    with pytest.raises(PackageError, match="non-finite"):
        HardenedPackage.from_parts(fields, dict(arrays, a_0=np.full((1, 2), np.nan)))
    assert HardenedPackage.expected_shapes(fields) == {"p_flex_mw": (1, 2), "a_0": (1, 2),
                                                      "rhs_0": (1,)}
    with pytest.raises(PackageError, match="privacy"):
        HardenedPackage.expected_shapes(dict(fields, privacy="full-ish"))


# --------------------------------------------------------------------------- DSO side
def test_dso_predicts_and_validates_a_format_2_clearing(simbench):
    _, bids, lin, pkg, hard, _ = simbench
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    r1 = clear(pkg, bids, 0.3 * up)
    r2 = clear(hard, bids, 0.3 * up)
    assert r2.activation_vector(pkg.columns) == pytest.approx(
        r1.activation_vector(pkg.columns), abs=1e-7)
    # the DSO's prediction from its private package equals the format-1 clearing's
    vm, ld = lin.predict(pkg, r2)
    assert vm == pytest.approx(r1.predicted_vm_pu, abs=1e-9)
    assert ld == pytest.approx(r1.predicted_loading_percent, abs=1e-7)
    v1, v2 = lin.validate(r1), lin.validate(r2, package=pkg)
    assert v2.converged and v2.vm_mae_pu == pytest.approx(v1.vm_mae_pu, rel=1e-6)
    assert v2.loading_mae_percent == pytest.approx(v1.loading_mae_percent, rel=1e-6)
    with pytest.raises(ValueError):   # without the private package there is nothing to check
        lin.validate(r2)


def _rounds(lin, pkg, bids, request, *, hardened: bool):
    """A frame of refinement rounds; the DSO keeps its format-1 package, publishes format 2."""
    session = RefinementSession(lin, policy=RefinementPolicy(max_rounds=2))
    step = session.open(pkg)
    costs = []
    while not isinstance(step, Verdict):
        sent = _harden(step, bids, seed=len(costs))[0] if hardened else step
        r = clear(sent, bids, request)
        costs.append(r.cost_eur_per_h)
        step = session.on_clearing(r)
    return step, costs, session.package.m


def test_refinement_rounds_of_a_format_2_exchange(simbench):
    _, bids, lin, pkg, _, _ = simbench
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    v1, c1, m1 = _rounds(lin, pkg, bids, 0.4 * up, hardened=False)
    v2, c2, m2 = _rounds(lin, pkg, bids, 0.4 * up, hardened=True)
    assert len(c1) >= 2, "the case should need a refinement round"
    assert (v2.verdict, v2.rounds, m2) == (v1.verdict, v1.rounds, m1)
    assert c2 == pytest.approx(c1, rel=REL)


# --------------------------------------------------------------------------- audit
def _attacker_view(hard: HardenedPackage, key, keymap: KeyMap, *, point: int = 0,
                   pairs_only: bool = False):
    """The published rows of ``point`` as a package the audit can attack. The attacker is
    given for free which rows are voltage / loading rows and which two rows are the sides of
    one (the key). Without ``pairs_only``: every row, base values absent (the normalised
    form hides them). With it: only loading rows published with both sides, their base value
    and sensitivity recovered from the pair and the public limits
    (audit.recover_from_normalised_pairs)."""
    inv = np.argsort(key.column_order)
    rows = key.rows[point]
    a = hard.rows_a[point][:, inv]
    n = hard.n
    vm_k = [k for k, r in enumerate(rows) if r.key in keymap.vm_pu]
    ld_k = [k for k, r in enumerate(rows) if r.key in keymap.loading_percent]
    base = np.zeros(len(ld_k))
    ltdf = a[ld_k]
    if pairs_only:
        vm_k = []
        side = {(rows[k].key, rows[k].side): k for k in ld_k}
        rhs = hard.rows_rhs[point]
        up = [k for k in ld_k if rows[k].side == "upper" and (rows[k].key, "lower") in side
              and rhs[k] != 0 and rhs[side[rows[k].key, "lower"]] != 0]
        lo = [side[rows[k].key, "lower"] for k in up]
        # a / rhs = s / (limit distance), signed: the form recover_from_normalised_pairs reads
        base, ltdf = A.recover_from_normalised_pairs(
            a[up] * rhs[up, None], a[lo] * rhs[lo, None], lower=-100.0, upper=100.0)
        ld_k = up
    # the key map must still describe the whole grid (the audit's truth graph)
    km = KeyMap(columns=dict(keymap.columns),
                vm_pu={**keymap.vm_pu, **{f"v{k}": keymap.vm_pu[rows[k].key] for k in vm_k}},
                loading_percent={**keymap.loading_percent, **{
                    f"l{k}": keymap.loading_percent[rows[k].key] for k in ld_k}},
                salt="")
    pseudo = SensitivityPackage(
        columns=tuple(hard.columns[j] for j in inv), vm_rows=[f"v{k}" for k in vm_k],
        loading_rows=[f"l{k}" for k in ld_k], points=[PointInfo("p")],
        p_flex_mw=hard.p_flex_mw[point:point + 1, inv],
        vm_pu=np.zeros((1, len(vm_k))), loading_percent=np.asarray(base)[None, :],
        vtdf=a[vm_k].reshape(1, len(vm_k), n), ltdf=np.asarray(ltdf).reshape(1, -1, n))
    return pseudo, km


def _bids_behind(pkg: SensitivityPackage, net, keymap: KeyMap) -> set[int]:
    """Columns downstream of the package's loading rows (truth, from the grid)."""
    truth = A._truth(net, keymap, pkg)
    return set().union(*[d for d in truth.downstream if d is not None])


@pytest.mark.parametrize("case", ["bergwald", "simbench", "meshed"])
def test_audit_on_format_2(case, request):
    net, _, lin, pkg, hard, key = request.getfixturevalue(case)
    full = A.audit(pkg, net=net, keymap=lin.keymap, order_permutations=20)
    point = int(np.argmax(hard.row_counts))   # the point publishing the most rows
    pseudo, km = _attacker_view(hard, key, lin.keymap, point=point)
    assert len(pseudo.vm_rows) + len(pseudo.loading_rows) == hard.row_counts[point] > 0
    rep = A.audit(pseudo, net=net, keymap=km, order_permutations=20)
    # downstream sets: at most one per published loading row (rows that can bind), and far
    # fewer than format 1 reveals
    assert rep["downstream_sets"].count <= len(pseudo.loading_rows)
    assert rep["downstream_sets"].count < full["downstream_sets"].count
    # base values absent: the load attacks find nothing on single rows ...
    assert not A.has_base_values(pseudo) and rep["loads_within_10pct"].count == 0
    # ... and through rows published with both sides at most the loads behind them
    pairs, km2 = _attacker_view(hard, key, lin.keymap, point=point, pairs_only=True)
    assert len(pairs.loading_rows) <= hard.screening["rows_with_both_sides"]
    if pairs.loading_rows:
        rep2 = A.audit(pairs, net=net, keymap=km2, order_permutations=5)
        behind = _bids_behind(pairs, net, km2)
        assert rep2["loads_within_10pct"].count <= len(behind)
    print(f"\n{case} format 1:\n{full.as_text()}\n{case} format 2 (point {point}):\n"
          f"{rep.as_text()}\nscreening {hard.screening}")


# --------------------------------------------------------------------------- configuration
def test_scenario_privacy_option_is_validated_at_parse_time():
    from scenarios.cli import build_parser
    from scenarios.config import ConfigError, parse_config

    # the co-simulation's default is format 2 with the rows of the announced request
    assert parse_config({"scenario": {}}).dso.privacy == "exact"
    assert parse_config({"scenario": {}}).dso.exact_rows == "request"
    assert parse_config({"scenario": {}, "dso": {"privacy": "full"}}).dso.privacy == "full"
    with pytest.raises(ConfigError, match=r"\[dso\] exact_rows: expected request or screened"):
        parse_config({"scenario": {}, "dso": {"exact_rows": "some"}})
    with pytest.raises(ConfigError, match=r"\[dso\] privacy.*'exact'.*'secret'"):
        parse_config({"scenario": {}, "dso": {"privacy": "secret"}})
    args = build_parser().parse_args(["dso", "linearize", "--grid", "g", "--bids", "b",
                                      "--out", "o"])
    assert args.privacy == "exact"


def test_screening_cache_gives_the_same_sides_with_fewer_lps(simbench):
    """The incremental screening (ScreeningCache: witnesses and dual certificates of an
    earlier publication, base case moved by 5 %) publishes the same sides as a cold
    screening, and those are the sides the reference method (one LP per side over all
    sides still kept) keeps; the clearing's cost equals format 1's."""
    from flexcore.dso.privacy import ScreeningCache, _screen_sequential, _sides, normalise_sides

    net, bids, lin, pkg, hard, _ = simbench
    cache = ScreeningCache()
    b = bids.subset(pkg.columns)
    harden(pkg, lower_mw=b.lower_mw, upper_mw=b.upper_mw, cache=cache)
    lin2 = Linearizer(net, bids, keymap=lin.keymap)  # same row keys: hints apply
    lin2.set_base(load_p_mw=1.05 * lin2.net.load.p_mw.to_numpy())
    pkg2 = lin2.linearize((0, 0.5, 1)).package
    warm, wkey = harden(pkg2, lower_mw=b.lower_mw, upper_mw=b.upper_mw, cache=cache)
    cold, ckey = harden(pkg2, lower_mw=b.lower_mw, upper_mw=b.upper_mw)

    def sides(key):
        return {(r.point, r.key, r.side) for rows in key.rows for r in rows}

    assert sides(wkey) == sides(ckey) and len(sides(ckey)) > 10
    assert wkey.report["certificate_drops"] + wkey.report["witness_confirmed"] > 0
    assert wkey.report["lps"] < ckey.report["lps"]
    # the reference method keeps as many sides per point
    for i in range(pkg2.m):
        a_raw, c, _ = _sides(pkg2, i)
        a, rhs, _ = normalise_sides(a_raw, c)
        centre, half = 0.5 * (b.lower_mw + b.upper_mw), 0.5 * (b.upper_mw - b.lower_mw)
        box_max = a @ centre + np.abs(a) @ half
        idx = np.flatnonzero(box_max > rhs + 1e-9 * (1 + np.abs(rhs)))
        pf = pkg2.p_flex_mw
        others = [j for j in range(pkg2.m) if j != i]
        d = pf[others] - pf[i]
        kept, ok, _ = _screen_sequential(a[idx], rhs[idx], box_max[idx], d,
                                         np.einsum("jn,jn->j", d, 0.5 * (pf[others] + pf[i])),
                                         b.lower_mw, b.upper_mw)
        assert ok and int(kept.sum()) == ckey.rows[i].__len__()
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    for hp in (warm, cold):
        _assert_same(pkg2, hp, bids, 0.5 * up)
