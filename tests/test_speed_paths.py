"""The DSO/TSO fast paths give what the plain formulas give (issue 16: the co-simulation
near the power-flow limit). Oracles: the textbook numpy expressions the fast paths replace
(einsum screening, full re-validation, scipy column slicing), on random packages."""
from __future__ import annotations

import numpy as np
import pytest

from agents.tso_agent import _offer_table
from flexcore.exchange.bids import BidTable
from flexcore.exchange.limits import Limits
from flexcore.exchange.package import SensitivityPackage, screen, screen_masks
from flexcore.exchange.points import PackageError, PointInfo


def _package(rng, m=3, v=40, l=30, n=50) -> SensitivityPackage:
    return SensitivityPackage(
        columns=[f"c{i}" for i in range(n)], vm_rows=[f"v{i}" for i in range(v)],
        loading_rows=[f"l{i}" for i in range(l)],
        points=[PointInfo(f"a{i}", 0.5 * i) for i in range(m)],
        p_flex_mw=rng.normal(size=(m, n)) * 0.01, vm_pu=1 + rng.normal(size=(m, v)) * 0.03,
        loading_percent=rng.normal(size=(m, l)) * 60, vtdf=rng.normal(size=(m, v, n)) * 1e-2,
        ltdf=rng.normal(size=(m, l, n)) * 20, limits=Limits())


def _einsum_masks(pkg, lo, hi, mv=0.005, ml=5.0):
    reach = np.maximum(np.abs(hi[None, :] - pkg.p_flex_mw), np.abs(lo[None, :] - pkg.p_flex_mw))
    lim = pkg.limits
    dv = np.einsum("mvn,mn->mv", np.abs(pkg.vtdf), reach)
    dl = np.einsum("mln,mn->ml", np.abs(pkg.ltdf), reach)
    return (((pkg.vm_pu - dv - mv <= lim.vm_min_pu) | (pkg.vm_pu + dv + mv >= lim.vm_max_pu))
            .any(axis=0),
            ((pkg.loading_percent - dl - ml <= lim.loading_min_percent)
             | (pkg.loading_percent + dl + ml >= lim.loading_max_percent)).any(axis=0))


@pytest.mark.parametrize("seed", range(6))
def test_screening_per_point_equals_the_einsum_over_all_points(seed):
    rng = np.random.default_rng(seed)
    pkg = _package(rng, m=int(rng.integers(1, 5)))
    lo, hi = -np.abs(rng.normal(size=pkg.n)) * 0.01, np.abs(rng.normal(size=pkg.n)) * 0.01
    want_v, want_l = _einsum_masks(pkg, lo, hi)
    got_v, got_l = screen_masks(pkg.p_flex_mw, pkg.vm_pu, pkg.loading_percent, list(pkg.vtdf),
                                list(pkg.ltdf), pkg.limits, lower_mw=lo, upper_mw=hi,
                                margin_vm_pu=0.005, margin_loading_percent=5.0)
    assert np.array_equal(got_v, want_v) and np.array_equal(got_l, want_l)
    assert 0 < want_v.sum() < pkg.vm_pu.shape[1]  # the draw screens some rows, not all
    out, rep = screen(pkg, lower_mw=lo, upper_mw=hi)
    assert out.vm_rows == tuple(k for k, x in zip(pkg.vm_rows, want_v) if x)
    assert np.array_equal(out.vtdf, pkg.vtdf[:, want_v, :])
    assert np.array_equal(out.ltdf, pkg.ltdf[:, want_l, :])
    assert rep.vm_rows_kept == int(want_v.sum()) and out.screening == rep.as_dict()


def test_with_point_and_select_rows_equal_a_package_built_from_scratch():
    rng = np.random.default_rng(7)
    pkg = _package(rng)
    new = {k: getattr(pkg, k)[0] * 1.5 for k in ("p_flex_mw", "vm_pu", "loading_percent",
                                                  "vtdf", "ltdf")}
    got = pkg.with_point("refine 1", **new)
    ref = SensitivityPackage(
        columns=pkg.columns, vm_rows=pkg.vm_rows, loading_rows=pkg.loading_rows,
        points=pkg.points + (PointInfo("refine 1", None),), limits=pkg.limits,
        **{k: np.concatenate([getattr(pkg, k), v[None]]) for k, v in new.items()})
    for name in ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf"):
        assert np.array_equal(getattr(got, name), getattr(ref, name))
    assert got.points == ref.points and got.limits == ref.limits
    keep_v, keep_l = rng.random(len(pkg.vm_rows)) < 0.5, rng.random(len(pkg.loading_rows)) < 0.5
    sel = got.select_rows(keep_v, keep_l)
    assert sel.vm_rows == tuple(k for k, x in zip(pkg.vm_rows, keep_v) if x)
    assert np.array_equal(sel.ltdf, got.ltdf[:, keep_l, :])
    sel.validate()  # what the fast paths skipped holds
    lim = Limits(vm_min_pu=0.9, vm_max_pu=1.1)
    assert pkg.with_limits(lim).limits == lim and pkg.with_limits(lim).vtdf is pkg.vtdf


def test_new_point_is_still_checked():
    rng = np.random.default_rng(8)
    pkg = _package(rng)
    parts = {k: getattr(pkg, k)[0].copy() for k in ("p_flex_mw", "vm_pu", "loading_percent",
                                                     "vtdf", "ltdf")}
    bad = dict(parts, vtdf=parts["vtdf"][:, :-1])
    with pytest.raises(PackageError, match="'vtdf' has shape"):
        pkg.with_point("x", **bad)
    parts["ltdf"][3, 4] = np.nan
    with pytest.raises(PackageError, match=r"'ltdf' holds a non-finite value at index \[3, 4\]"):
        pkg.with_point("x", **parts)
    with pytest.raises(PackageError, match="masks of shape"):
        pkg.select_rows(np.ones(3, bool), np.ones(len(pkg.loading_rows), bool))


def test_finite_check_survives_an_overflowing_sum():
    """The one-pass check sums the entries: huge finite values overflow the sum, which
    must not be taken for a non-finite entry."""
    rng = np.random.default_rng(9)
    pkg = _package(rng, m=1)
    vm = np.full_like(pkg.vm_pu, 1.0)
    big = SensitivityPackage(columns=pkg.columns, vm_rows=pkg.vm_rows,
                             loading_rows=pkg.loading_rows, points=pkg.points,
                             p_flex_mw=pkg.p_flex_mw, vm_pu=vm,
                             loading_percent=np.full_like(pkg.loading_percent, 1e308),
                             vtdf=pkg.vtdf, ltdf=pkg.ltdf)
    assert np.isinf(big.loading_percent.sum())
    with pytest.raises(PackageError, match="'vm_pu' holds a non-finite"):
        SensitivityPackage(columns=pkg.columns, vm_rows=pkg.vm_rows,
                           loading_rows=pkg.loading_rows, points=pkg.points,
                           p_flex_mw=pkg.p_flex_mw, vm_pu=np.where(vm > 0, np.inf, vm),
                           loading_percent=pkg.loading_percent, vtdf=pkg.vtdf, ltdf=pkg.ltdf)


def test_tso_offer_table_maps_columns_like_the_offer_dicts():
    offers = {"b1": {"bid_id": "b1", "volume_mw": 0.5, "price_eur_per_mwh": 40.0},
              "b2": {"bid_id": "b2", "volume_mw": -0.2, "price_eur_per_mwh": 10.0,
                     "min_mw": 0.1, "indivisible": True}}
    pos, table = _offer_table(offers)
    cols = ("b2", "zz", "b1")
    idx = np.array([pos.get(c, -1) for c in cols])
    bids = BidTable(ids=cols, **{k: v[idx] for k, v in table.items()})
    assert bids.volume_mw.tolist() == [-0.2, 0.0, 0.5]
    assert bids.price_eur_per_mwh.tolist() == [10.0, 0.0, 40.0]
    assert bids.min_mw.tolist() == [0.1, 0.0, 0.0]
    assert bids.indivisible.tolist() == [True, False, False]
    assert bids.subset(cols) is bids and bids.subset(("b1", "b2", "zz")).ids == ("b1", "b2", "zz")


def _with_room(ref: SensitivityPackage, *, spare: int) -> SensitivityPackage:
    """``ref`` with its vtdf and ltdf in point buffers with room for ``spare`` more points."""
    from flexcore.exchange.package import point_buffer

    fields = {}
    for name in ("vtdf", "ltdf"):
        buf = point_buffer(len(ref.points), getattr(ref, name).shape[1:], spare=spare)
        buf[:] = getattr(ref, name)
        fields[name] = buf
    return SensitivityPackage(columns=ref.columns, vm_rows=ref.vm_rows,
                              loading_rows=ref.loading_rows, points=ref.points,
                              p_flex_mw=ref.p_flex_mw, vm_pu=ref.vm_pu,
                              loading_percent=ref.loading_percent, **fields)


def test_refinement_points_written_into_spare_room_never_change_a_package():
    """A package whose matrices have room for more points (point_buffer) gets its
    refinement point written in place; every package made before keeps its values, and
    extending an older package copies (oracle: np.concatenate)."""
    rng = np.random.default_rng(10)
    ref = _package(rng, m=2)
    pkg = _with_room(ref, spare=2)

    def point(k):
        return {name: getattr(ref, name)[0] + k for name in ("p_flex_mw", "vm_pu",
                                                              "loading_percent", "vtdf",
                                                              "ltdf")}

    one = pkg.with_point("r1", **point(1.0))
    two = one.with_point("r2", **point(2.0))
    assert np.shares_memory(two.vtdf, pkg.vtdf) and np.shares_memory(two.ltdf, one.ltdf)
    other = one.with_point("r2 other", **point(3.0))      # one is no longer the latest
    three = two.with_point("r3", **point(4.0))              # the room is used up
    assert not np.shares_memory(other.vtdf, two.vtdf)
    assert not np.shares_memory(three.vtdf, two.vtdf)
    for got, adds in ((pkg, ()), (one, (1.0,)), (two, (1.0, 2.0)), (other, (1.0, 3.0)),
                      (three, (1.0, 2.0, 4.0))):
        for name in ("vtdf", "ltdf", "vm_pu"):
            want = np.concatenate([getattr(ref, name)]
                                  + [point(k)[name][None] for k in adds])
            assert np.array_equal(getattr(got, name), want)


def test_request_rows_reuse_the_products_of_points_in_the_same_memory():
    from flexcore.dso.privacy import RequestRows

    rng = np.random.default_rng(11)
    ref = _package(rng, m=3)
    pkg = _with_room(ref, spare=1)
    r0 = RequestRows(pkg, request_mw=0.5)
    pkg1 = pkg.with_point("refine 1", **{k: getattr(ref, k)[1] * 0.9 for k in (
        "p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf")})
    reused = RequestRows(pkg1, request_mw=0.5, previous=r0)
    fresh = RequestRows(pkg1, request_mw=0.5)
    assert reused._products[1][0] is r0._products[1][0]          # same memory: reused
    assert reused._products[3][0] is not None and len(reused.c) == 4
    for a, b in zip(reused.c, fresh.c):
        assert np.array_equal(a, b)
    copied = RequestRows(ref.with_point("refine 1", **{k: getattr(ref, k)[1] * 0.9 for k in (
        "p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf")}), request_mw=0.5,
        previous=r0)                                               # other memory: computed
    assert copied._products[1][0] is not r0._products[1][0]
    for a, b in zip(copied.c, fresh.c):
        assert np.array_equal(a, b)
