"""The per-frame shortcuts of the DSO and TSO agree with the plain computations they replace:
block solves with one LU factorisation (flexcore.grid.lusolve) against a dense solve,
operating points with one sensitivity column per bid bus against the per-bid matrices,
and the TSO's reuse of identical region solves (flexcore.market.direct.RegionCache)
against fresh clearings."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from flexcore.dso.linearizer import Linearizer, OperatingPoint
from flexcore.dso.privacy import RequestRows
from flexcore.exchange.bids import BidTable
from flexcore.exchange.package import PointInfo, SensitivityPackage, screen
from flexcore.grid.district_grid import district_net
from flexcore.grid.lusolve import BlockLU
from flexcore.market import clear
from flexcore.market.direct import RegionCache


def _sparse_system(n: int = 300, seed: int = 3) -> sp.csc_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=0.01, random_state=seed, format="csc")
    return (a + sp.diags(rng.uniform(2.0, 3.0, n))).tocsc()


def test_block_lu_matches_dense_solve():
    a = _sparse_system()
    dense = a.toarray()
    rhs = np.random.default_rng(1).normal(size=(a.shape[0], 17))
    lu = BlockLU(a)
    np.testing.assert_allclose(lu.solve(rhs), np.linalg.solve(dense, rhs), rtol=0, atol=1e-12)
    # unit right-hand sides built in SuperLU's row order
    rows, cols = np.array([5, 40, 299, 7]), np.array([0, 1, 2, 3])
    b = np.zeros((a.shape[0], 4))
    b[rows, cols] = 0.25
    np.testing.assert_allclose(lu.solve_unit(rows, cols, 0.25, 4), np.linalg.solve(dense, b),
                               rtol=0, atol=1e-12)
    # a single vector goes through SuperLU itself
    np.testing.assert_allclose(lu.solve(rhs[:, 0]), np.linalg.solve(dense, rhs[:, 0]),
                               rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def lin_many_bids():
    """Bergwald with four bids on each of the first 60 building buses."""
    net, _, load_idx, _ = district_net("bergwald")
    buses = np.repeat(net.load.bus.to_numpy()[load_idx][:60], 4)
    rng = np.random.default_rng(0)
    table = BidTable(ids=tuple(f"b{k}" for k in range(len(buses))),
                     volume_mw=rng.uniform(-0.004, 0.006, len(buses)),
                     price_eur_per_mwh=rng.uniform(20.0, 90.0, len(buses)), bus=buses)
    return Linearizer(net, table, salt="t")


def test_compact_points_give_the_per_bid_package(lin_many_bids):
    lin = lin_many_bids
    pts = [lin.point(a * lin.bids.volume_mw, label=f"a={a:g}", activation_fraction=a)
           for a in (0.0, 0.5, 1.0)]
    p0 = pts[0]
    assert p0.bid_column is not None and p0.vtdf_cols.shape[1] == 60
    # the per-bid matrices: bids on one bus share their column
    np.testing.assert_array_equal(p0.vtdf, p0.vtdf_cols[:, p0.bid_column])
    np.testing.assert_array_equal(p0.ltdf[:, 4:8], np.repeat(p0.ltdf_cols[:, [1]], 4, axis=1))
    expanded = [OperatingPoint(p.label, p.activation_fraction, p.p_flex_mw, p.vm_pu,
                               p.loading_percent, p.vtdf, p.ltdf, p.time_s) for p in pts]
    for screen_rows in (False, True):
        a = lin.package(pts, screen_rows=screen_rows)[0]
        b = lin.package(expanded, screen_rows=screen_rows)[0]
        assert a.vm_rows == b.vm_rows and a.loading_rows == b.loading_rows
        for name in ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # screening of the compact points keeps what screen() keeps on the full package
    full = lin.package(expanded)[0]
    kept = screen(full, lower_mw=lin.bids.lower_mw, upper_mw=lin.bids.upper_mw)[0]
    screened = lin.package(pts, screen_rows=True)[0]
    assert screened.vm_rows == kept.vm_rows and screened.loading_rows == kept.loading_rows
    # a refinement point written from the compact matrices
    ref = lin.refine(lin.package(pts)[0], 0.3 * lin.bids.volume_mw)
    pt = lin.point(0.3 * lin.bids.volume_mw, label="r")
    np.testing.assert_array_equal(ref.vtdf[-1], pt.vtdf)


def _package(m: int = 3, n: int = 6, rows: int = 4, seed: int = 0) -> SensitivityPackage:
    rng = np.random.default_rng(seed)
    pf = np.linspace(0.0, 1.0, m)[:, None] * rng.uniform(0.05, 0.2, n)[None, :]
    return SensitivityPackage(
        columns=tuple(f"c{j}" for j in range(n)), vm_rows=[f"V{k}" for k in range(rows)],
        loading_rows=[f"L{k}" for k in range(rows)], points=[PointInfo(f"p{i}") for i in range(m)],
        p_flex_mw=pf, vm_pu=rng.uniform(1.04, 1.049, (m, rows)),
        loading_percent=rng.uniform(40.0, 95.0, (m, rows)),
        vtdf=rng.uniform(0.05, 0.2, (m, rows, n)), ltdf=rng.uniform(-30.0, 30.0, (m, rows, n)))


def test_region_cache_reuses_only_identical_regions():
    pkg = _package()
    table = BidTable(ids=pkg.columns, volume_mw=np.full(pkg.n, 0.3),
                     price_eur_per_mwh=np.linspace(30.0, 80.0, pkg.n))
    request = 0.5
    rows = RequestRows(pkg, request_mw=request)
    first, _ = rows.publish()
    cache = RegionCache()
    r1 = clear(first, table, request, region_cache=cache)
    assert (cache.hits, cache.misses) == (0, pkg.m)
    again, _ = rows.publish()  # the same sides, the same round: the same regions
    r2 = clear(again, table, request, region_cache=cache)
    assert (cache.hits, cache.misses) == (pkg.m, pkg.m)
    fresh = clear(again, table, request)
    for r in (r1, r2):
        assert r.status == fresh.status and r.operating_point == fresh.operating_point
        assert r.activation_mw == fresh.activation_mw
        assert r.cost_eur_per_h == fresh.cost_eur_per_h
    # the DSO's cuts: a side added to the cleared point, only that region is solved again
    cuts = 0
    r = r2
    while r.ok and rows.cut(int(r.operating_point), r.activation_vector(pkg.columns), most=1):
        cuts += 1
        hits, misses = cache.hits, cache.misses
        changed, _ = rows.publish()
        r = clear(changed, table, request, region_cache=cache)
        assert (cache.hits - hits, cache.misses - misses) == (pkg.m - 1, 1)
        fresh = clear(changed, table, request)
        assert r.status == fresh.status and r.operating_point == fresh.operating_point
        assert r.activation_mw == fresh.activation_mw
        assert r.cost_eur_per_h == fresh.cost_eur_per_h
    assert cuts >= 1
    # with a time limit nothing is reused
    hits = cache.hits
    clear(changed, table, request, region_cache=cache, time_limit_s=30.0)
    assert cache.hits == hits
