"""One clearing over N packages (flexcore.market.multi) against the m^N enumeration."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from flexcore.exchange.bids import BidTable
from flexcore.exchange.clearing import ClearingError
from flexcore.exchange.enums import ClearingStatus
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import Limits
from flexcore.exchange.package import PointInfo, SensitivityPackage
from flexcore.market.multi import (
    SLACK_COLUMN,
    AreaPackage,
    clear_region,
    effective_limits,
    enumerate_regions,
    split_slack_column,
    with_slack_column,
)


def _package(rng, name: str, vol: np.ndarray, fractions, *, v: int = 3, l: int = 2,
             limits: Limits | None = None) -> SensitivityPackage:
    m, n = len(fractions), len(vol)
    # sensitivities change strongly from point to point: the region matters
    vtdf = -rng.uniform(0.005, 0.03, (m, v, n)) * (1 + 2 * np.arange(m))[:, None, None]
    ltdf = rng.uniform(5, 30, (m, l, n)) * (1 + np.arange(m))[:, None, None]
    return SensitivityPackage(
        columns=tuple(f"{name}-b{j}" for j in range(n)),
        vm_rows=tuple(f"{name}-v{k}" for k in range(v)),
        loading_rows=tuple(f"{name}-l{k}" for k in range(l)),
        points=tuple(PointInfo(f"a={a:g}", a) for a in fractions),
        p_flex_mw=np.array([a * vol for a in fractions]),
        vm_pu=np.full((m, v), 1.0) - 0.01 * np.arange(m)[:, None],
        loading_percent=np.full((m, l), 40.0) + 10 * np.arange(m)[:, None],
        vtdf=vtdf, ltdf=ltdf, limits=limits or Limits(0.97, 1.05, -100, 70))


def _areas(seed: int, n_areas: int = 3, m: int = 3, *, coupled: bool = False):
    rng = np.random.default_rng(seed)
    fractions = [0.0, 1.0] if m == 2 else [0.0, 0.5, 1.0]
    areas = []
    for k in range(n_areas):
        vol = rng.uniform(0.2, 1.0, 4)
        bids = BidTable(ids=tuple(f"a{k}-b{j}" for j in range(4)), volume_mw=vol,
                        price_eur_per_mwh=rng.uniform(20, 200, 4))
        pkg = _package(rng, f"a{k}", vol, fractions)
        if coupled:
            pkg = with_slack_column(pkg, rng.uniform(0.8, 1.0, (m, 3)),
                                    rng.uniform(-5, 5, (m, 2)))
        areas.append(AreaPackage(f"a{k}", pkg, bids, mv_column=f"inj{k}" if coupled else None,
                                 mv_slack_row=f"mv-v{k}" if coupled else None))
    mv = None
    if coupled:
        tot = np.array([a.bids.volume_mw.sum() for a in areas])
        mv = SensitivityPackage(
            columns=tuple(f"inj{k}" for k in range(n_areas)),
            vm_rows=tuple(f"mv-v{k}" for k in range(n_areas)), loading_rows=("mv-l0",),
            points=(PointInfo("a=0", 0.0), PointInfo("a=1", 1.0)),
            p_flex_mw=np.array([0 * tot, tot]),
            vm_pu=np.array([[0.99] * n_areas, [1.0] * n_areas]),
            loading_percent=np.array([[50.0], [30.0]]),
            # MV sensitivities shrink with the number of areas (3 areas: as drawn)
            vtdf=rng.uniform(0.005, 0.02, (2, n_areas, n_areas)) * 3 / n_areas,
            ltdf=-rng.uniform(5, 15, (2, 1, n_areas)) * 3 / n_areas,
            limits=Limits(0.965, 1.055, -100, 100))
    return areas, mv


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("coupled", [False, True])
def test_milp_equals_enumeration(m, coupled):
    binding = 0
    for seed in range(3):
        areas, mv = _areas(seed, m=m, coupled=coupled)
        total = sum(a.bids.volume_mw.sum() for a in areas)
        for frac in (0.4, 0.8):
            req = frac * total
            milp = clear_region(areas, req, mv=mv)
            best, count = enumerate_regions(areas, req, mv=mv)
            assert count == m ** 3 * (2 if coupled else 1)
            if best is None:
                assert milp.status == ClearingStatus.INFEASIBLE
                continue
            assert milp.status == ClearingStatus.OPTIMAL
            assert milp.cost_eur_per_h == pytest.approx(best.cost_eur_per_h, rel=1e-6, abs=1e-6)
            # a loose gap may stop at the incumbent (LP bound certificate): within the gap
            loose = clear_region(areas, req, mv=mv, mip_rel_gap=1e-2)
            assert best.cost_eur_per_h - 1e-6 <= loose.cost_eur_per_h \
                <= best.cost_eur_per_h * (1 + 1e-2) + 1e-6
            x = np.concatenate([milp.activation_mw[a.name] for a in areas])
            assert x.sum() == pytest.approx(req, abs=1e-7)
            # the unconstrained merit order is cheaper whenever a limit binds
            prices = np.concatenate([a.bids.price_eur_per_mwh for a in areas])
            vols = np.concatenate([a.bids.volume_mw for a in areas])
            left, merit = req, 0.0
            for j in np.argsort(prices):
                take = min(vols[j], left)
                merit += take * prices[j]
                left -= take
            assert milp.cost_eur_per_h >= merit - 1e-6
            binding += milp.cost_eur_per_h > merit + 1e-6
            # every predicted row within its (effective) limits
            for a in areas:
                pkg = split_slack_column(a.package)[0]
                lb, ub = effective_limits(pkg)
                pred = np.concatenate([milp.predicted_vm_pu[a.name],
                                       milp.predicted_loading_percent[a.name]])
                assert (pred >= lb - 1e-7).all() and (pred <= ub + 1e-7).all()
    assert binding >= 3      # the oracle was exercised on cases where limits bind


def test_slack_column_round_trip_and_coupling_moves_rows():
    areas, mv = _areas(1, coupled=True)
    pkg, gv, gl, off = split_slack_column(areas[0].package)
    assert SLACK_COLUMN not in pkg.columns and gv.shape == (3, 3) and gl.shape == (3, 2)
    assert (off == 0).all()
    total = sum(a.bids.volume_mw.sum() for a in areas)
    r = clear_region(areas, 0.5 * total, mv=mv)
    assert r.ok and r.mv_point is not None
    # the predicted slack change is the MV package's voltage prediction minus its base
    inj = np.array([r.activation_mw[a.name].sum() for a in areas])
    i = r.mv_point
    v_mv = mv.vm_pu[i] + mv.vtdf[i] @ (inj - mv.p_flex_mw[i])
    for k, a in enumerate(areas):
        assert r.slack_dv_pu[a.name] == pytest.approx(v_mv[k] - mv.vm_pu[0, k], abs=1e-9)


def test_base_case_violation_is_not_made_worse():
    areas, _ = _areas(2)
    pkg = areas[0].package
    vm = pkg.vm_pu.copy()
    vm[:, 0] = 0.95          # below 0.97 at every point, also at the zero point
    bad = AreaPackage("a0", SensitivityPackage(**{**pkg.__dict__, "vm_pu": vm}), areas[0].bids)
    lb, _ = effective_limits(bad.package)
    assert lb[0] == pytest.approx(0.95) and lb[1] == pytest.approx(0.97)
    r = clear_region([bad] + areas[1:], 0.2)
    assert r.ok and r.predicted_vm_pu["a0"][0] >= 0.95 - 1e-9


def test_bad_input_names_the_culprit():
    areas, _ = _areas(0)
    with pytest.raises(ClearingError, match="fixed_points"):
        clear_region(areas, 0.5, fixed_points={"nope": 0})
    with pytest.raises(ClearingError, match="unique"):
        clear_region([areas[0], areas[0]], 0.5)


@pytest.mark.parametrize("coupled", [False, True])
def test_lazy_areas_equal_the_full_formulation_on_a_medium_case(coupled):
    """12 areas: the lazy clearing (areas relaxed until their optimum violates a row) has
    the optimum of the previous formulation (every area full, every row), to rel 1e-7."""
    promoted = rounds = 0
    for seed in (3, 4):
        areas, mv = _areas(seed, n_areas=12, coupled=coupled)
        total = sum(a.bids.volume_mw.sum() for a in areas)
        for frac in (0.3, 0.45):
            lazy = clear_region(areas, frac * total, mv=mv, mip_rel_gap=1e-9)
            full = clear_region(areas, frac * total, mv=mv, mip_rel_gap=1e-9, lazy=False,
                                prefilter=False)
            assert lazy.status == full.status
            if not full.ok:
                continue
            assert full.full_areas == 12 and full.lazy_rounds == 1
            assert lazy.cost_eur_per_h == pytest.approx(full.cost_eur_per_h, rel=1e-7)
            if seed == 3:       # every round a MILP (no incumbent LPs): the same optimum
                bare = clear_region(areas, frac * total, mv=mv, mip_rel_gap=1e-9,
                                    mip_start=False)
                assert bare.cost_eur_per_h == pytest.approx(full.cost_eur_per_h, rel=1e-7)
            promoted += 0 < lazy.full_areas < 12
            rounds += lazy.lazy_rounds > 1
            for a in areas:     # relaxed areas too: a point whose rows hold
                pkg = split_slack_column(a.package)[0]
                lb, ub = effective_limits(pkg)
                pred = np.concatenate([lazy.predicted_vm_pu[a.name],
                                       lazy.predicted_loading_percent[a.name]])
                assert (pred >= lb - 1e-7).all() and (pred <= ub + 1e-7).all()
                x = lazy.activation_mw[a.name]
                d = ((x[None, :] - pkg.p_flex_mw) ** 2).sum(axis=1)
                assert d[lazy.points[a.name]] <= d.min() + 1e-7     # its Voronoi region
    assert promoted >= 2 and rounds >= 2   # the lazy rounds were exercised


@pytest.mark.parametrize("coupled", [False, True])
def test_warm_start_gives_the_cold_optimum(coupled):
    """``warm_full`` (areas to start full: the previous clearing's, none, all, or some
    that never bind) changes the lazy rounds, not the optimum: equal to the cold clearing
    and to the m^N enumeration; with the cold clearing's own full set it is the same
    solution after one round."""
    warm_used = 0
    for seed in range(3):
        areas, mv = _areas(seed, coupled=coupled)
        total = sum(a.bids.volume_mw.sum() for a in areas)
        for frac in (0.4, 0.8):
            req = frac * total
            cold = clear_region(areas, req, mv=mv, mip_rel_gap=1e-9)
            best, _ = enumerate_regions(areas, req, mv=mv)
            names = [a.name for a in areas]
            for warm in (cold.full_names, names, names[:1], ("nope",)):
                r = clear_region(areas, req, mv=mv, mip_rel_gap=1e-9, warm_full=warm)
                assert r.status == cold.status
                if best is None:
                    continue
                assert r.cost_eur_per_h == pytest.approx(best.cost_eur_per_h, rel=1e-7)
                assert r.cost_eur_per_h == pytest.approx(cold.cost_eur_per_h, rel=1e-9)
            if best is None:
                continue
            same = clear_region(areas, req, mv=mv, mip_rel_gap=1e-9,
                                warm_full=cold.full_names)
            assert set(same.full_names) == set(cold.full_names)
            assert same.points == cold.points
            for a in areas:
                np.testing.assert_allclose(same.activation_mw[a.name],
                                           cold.activation_mw[a.name], atol=1e-9)
            if cold.lazy_rounds > 1:
                assert same.lazy_rounds == 1
                warm_used += 1
    assert warm_used >= 1     # a case where the cold start needed more than one round


# --------------------------------------------------------------------------- LP warm start
def _same_optimum(warm, cold):
    """Warm and cold clearings agree: status, cost to 1e-9 relative, points."""
    assert warm.status == cold.status
    if not cold.ok:
        return
    assert warm.cost_eur_per_h == pytest.approx(cold.cost_eur_per_h, rel=1e-9)
    assert warm.points == cold.points and warm.mv_point == cold.mv_point


def _add_point(area: AreaPackage, rng, fraction: float) -> AreaPackage:
    """``area`` with one more operating point (a refinement): activation ``fraction`` of
    every bid, sensitivities of the last point perturbed (slack column: offset 0)."""
    pkg = area.package
    pf = np.array([fraction * v for v in area.bids.volume_mw] +
                  [0.0] * (pkg.n - len(area.bids.ids)))
    new = replace(
        pkg, points=pkg.points + (PointInfo(f"a={fraction:g}", fraction),),
        p_flex_mw=np.vstack([pkg.p_flex_mw, pf]),
        vm_pu=np.vstack([pkg.vm_pu, pkg.vm_pu[-1] + 0.003]),
        loading_percent=np.vstack([pkg.loading_percent, pkg.loading_percent[-1] - 2.0]),
        vtdf=np.concatenate([pkg.vtdf, pkg.vtdf[-1:] * rng.uniform(0.8, 1.2, pkg.vtdf[0].shape)]),
        ltdf=np.concatenate([pkg.ltdf, pkg.ltdf[-1:] * rng.uniform(0.8, 1.2, pkg.ltdf[0].shape)]))
    return replace(area, package=new)


@pytest.mark.parametrize("coupled", [False, True])
def test_lp_warm_start_gives_the_cold_optimum_on_a_sequence(coupled):
    """A sequence of clearings as the TSO makes them (12 areas): the first (lazy rounds
    make areas full), again with the full areas carried (``warm_full``), with a point added
    to three areas (a refinement round), and with new numbers (the next frame). Each
    warm-started from the one before (``warm=``) has the cold optimum (every LP relaxation
    from scratch), and the warm starts save simplex iterations; the same model warm-started
    from its own optimal basis takes none."""
    rng = np.random.default_rng(7)
    iters_cold = iters_warm = warm_used = 0
    for seed in (3,) if coupled else (3, 4):     # coupled: MILPs, slower
        areas, mv = _areas(seed, n_areas=12, coupled=coupled)
        total = sum(a.bids.volume_mw.sum() for a in areas)
        refined = [_add_point(a, rng, 0.75) if k in (1, 5, 9) else a
                   for k, a in enumerate(areas)]
        frame2 = [replace(a, package=replace(a.package, vm_pu=a.package.vm_pu - 0.002))
                  for a in refined]
        steps = [(areas, 0.45), (areas, 0.45), (refined, 0.45), (frame2, 0.4)]
        prev_c = prev_w = None
        for k, (pk, frac) in enumerate(steps):
            full = () if prev_c is None else prev_c.full_names
            cold = clear_region(pk, frac * total, mv=mv, mip_rel_gap=1e-9, warm_full=full,
                                lp_warm_start=False)
            warm = clear_region(pk, frac * total, mv=mv, mip_rel_gap=1e-9, warm_full=full,
                                warm=prev_w)
            _same_optimum(warm, cold)
            assert cold.lp_warm_started == 0 and cold.lp_basis is None
            assert warm.lp_warm_rejected == 0
            assert warm.lp_warm_started == warm.lp_relaxations - (k == 0)
            iters_cold += cold.lp_iterations
            iters_warm += warm.lp_iterations
            warm_used += warm.lp_warm_started
            prev_c, prev_w = cold, warm
            if k == 1 and warm.lazy_rounds == 1:   # the previous clearing's last LP again
                assert warm.lp_iterations == 0 < cold.lp_iterations
    assert warm_used >= 5
    print(f"simplex iterations cold {iters_cold}, warm {iters_warm}")
    assert iters_warm < 0.7 * iters_cold


def _format2(pkg: SensitivityPackage, published) -> HardenedPackage:
    """The rows ``published`` ({(point, row, "up" | "down")}) of format-1 ``pkg`` as a
    format-2 package: ``a x <= rhs`` normalised to rhs in {-1, 0, 1} (module
    flexcore.exchange.hardened), in a shuffled order (the DSO's)."""
    lb, ub = effective_limits(pkg)
    rng = np.random.default_rng(len(published))
    rows_a, rows_rhs = [], []
    for i in range(pkg.m):
        sens = np.concatenate([pkg.vtdf[i], pkg.ltdf[i]])
        base = np.concatenate([pkg.vm_pu[i], pkg.loading_percent[i]])
        a_i, rhs_i = [], []
        for k, r, side in published:
            if k != i:
                continue
            sgn = 1.0 if side == "up" else -1.0
            a = sgn * sens[r]
            c = sgn * ((ub[r] if side == "up" else lb[r]) - base[r]) + a @ pkg.p_flex_mw[i]
            a_i.append(a / (abs(c) if c != 0 else np.linalg.norm(a)))
            rhs_i.append(np.sign(c))
        order = rng.permutation(len(a_i))
        rows_a.append(np.array(a_i).reshape(-1, pkg.n)[order])
        rows_rhs.append(np.array(rhs_i)[order])
    return HardenedPackage(privacy="exact", columns=pkg.columns, points=pkg.points,
                           p_flex_mw=pkg.p_flex_mw, rows_a=tuple(rows_a),
                           rows_rhs=tuple(rows_rhs))


def test_lp_warm_start_with_lazily_published_rows():
    """Format 2, rows published lazily (each round every area adds the row side its
    activation violates most in its private model, flexcore.region.publish): each clearing
    warm-started from the one before has the cold optimum, the last one the optimum of
    the format-1 packages, with fewer simplex iterations in all."""
    iters_cold = iters_warm = clearings = 0
    for seed in (3, 4):
        areas, _ = _areas(seed, n_areas=12)
        total = sum(a.bids.volume_mw.sum() for a in areas)
        req = 0.45 * total
        reference = clear_region(areas, req, mip_rel_gap=1e-9)
        published = {a.name: [] for a in areas}
        prev_c = prev_w = None
        while True:
            pk = [AreaPackage(a.name, _format2(a.package, published[a.name]), a.bids)
                  for a in areas]
            full = () if prev_c is None else prev_c.full_names
            cold = clear_region(pk, req, mip_rel_gap=1e-9, warm_full=full,
                                lp_warm_start=False)
            warm = clear_region(pk, req, mip_rel_gap=1e-9, warm_full=full, warm=prev_w)
            _same_optimum(warm, cold)
            assert warm.lp_warm_rejected == 0
            assert warm.lp_warm_started == warm.lp_relaxations - (prev_w is None)
            iters_cold += cold.lp_iterations
            iters_warm += warm.lp_iterations
            clearings += 1
            prev_c, prev_w = cold, warm
            added = False
            for a in areas:
                pkg, i, x = a.package, cold.points[a.name], cold.activation_mw[a.name]
                lb, ub = effective_limits(pkg)
                pred = np.concatenate([pkg.vm_pu[i], pkg.loading_percent[i]]) + \
                    np.concatenate([pkg.vtdf[i], pkg.ltdf[i]]) @ (x - pkg.p_flex_mw[i])
                over = np.r_[pred - ub, lb - pred]
                k = int(np.argmax(over))
                if over[k] > 1e-9:
                    published[a.name].append((i, k % pred.size, "up" if k < pred.size
                                              else "down"))
                    added = True
            if not added:
                break
        assert cold.cost_eur_per_h == pytest.approx(reference.cost_eur_per_h, rel=1e-9)
    assert clearings >= 6
    print(f"{clearings} clearings, simplex iterations cold {iters_cold}, warm {iters_warm}")
    assert iters_warm < 0.7 * iters_cold


def test_complete_basis_repairs_any_basis_and_the_solve_is_exact():
    """flexcore.market.direct: a basis with too many or too few basic variables, new
    columns and rows, or nonbasic at an infinite bound is completed to one HiGHS accepts
    as it is (one basic variable per row); solved from it, the LP has the cold optimum; its
    own optimal basis takes no simplex iteration."""
    import scipy.sparse as sp

    from flexcore.market.direct import (
        BASIS_BASIC,
        BASIS_LOWER,
        BASIS_NEW,
        BasisStatus,
        LinearProgram,
        complete_basis,
        solve_highs,
    )
    rng = np.random.default_rng(5)
    n, m = 60, 40
    lp = LinearProgram(-rng.uniform(0, 1, n), np.zeros(n), np.ones(n),
                       sp.csr_matrix(rng.uniform(0, 1, (m, n))), np.full(m, -np.inf),
                       np.full(m, 5.0), np.zeros(n, np.int8))
    cold = solve_highs(lp, want_basis=True)
    assert cold.iterations > 10 and cold.basis is not None
    again = solve_highs(lp, basis=cold.basis)
    assert again.warm_started and again.iterations == 0
    assert again.objective == pytest.approx(cold.objective, rel=1e-12)
    for col, row in ((np.full(n, BASIS_BASIC), np.full(m, BASIS_BASIC)),       # surplus
                     (np.full(n, BASIS_LOWER), np.full(m, BASIS_LOWER)),       # deficit, -inf
                     (np.full(n, BASIS_NEW), np.full(m, BASIS_NEW))):          # all new
        done = complete_basis(BasisStatus(col.astype(np.int8), row.astype(np.int8)), lp)
        assert (done.col == BASIS_BASIC).sum() + (done.row == BASIS_BASIC).sum() == m
        assert not np.any((done.row == BASIS_LOWER) & ~np.isfinite(lp.row_lo))
        out = solve_highs(lp, basis=BasisStatus(col.astype(np.int8), row.astype(np.int8)))
        assert out.warm_started
        assert out.objective == pytest.approx(cold.objective, rel=1e-9)
