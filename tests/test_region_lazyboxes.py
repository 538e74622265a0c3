"""The region's large LP relaxations without the bid-box rows they do not need
(flexcore.market.multi, module doc "Lazy bid boxes"): the same optimum as with every row,
checked against HiGHS on the whole relaxation and on the TSO's sequence of clearings."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import flexcore.market.multi as multi
from flexcore.market.direct import BASIS_BASIC, solve_highs
from flexcore.market.multi import clear_region
from tests.test_region_lpwarm import _sequence
from tests.test_region_market import _areas, _same_optimum


def _whole_and_lazy(coupled: bool):
    """Every area full: the model, its LP relaxation, its row keys and HiGHS's outcome on
    the whole relaxation."""
    areas, mv = _areas(4, n_areas=6, coupled=coupled)
    request = 0.6 * sum(a.bids.volume_mw.sum() for a in areas)
    model = multi._setup(areas, request, mv, prefilter=False)
    for blk in model.blocks:
        blk.full = True
    lp, _, row_keys = multi._program(model)
    relax = replace(lp, integrality=np.zeros_like(lp.integrality))
    return model, relax, row_keys, solve_highs(relax)


def _box_keys(keys) -> set:
    return {k for k in keys if isinstance(k, tuple) and len(k) > 1
            and k[1] in ("box-hi", "box-lo")}


@pytest.mark.parametrize("coupled", [False, True])
def test_relaxation_without_idle_box_rows_is_the_whole_relaxation(coupled):
    """Every area full, the LP relaxation solved by ``_large_relaxation`` from no box row at
    all: HiGHS's objective of the whole relaxation, some box rows never added, and the
    basis it returns (the rows left out basic) is optimal for the whole relaxation: HiGHS
    starts from it and ends without a simplex iteration."""
    model, relax, row_keys, whole = _whole_and_lazy(coupled)
    lps = multi._LpState()
    out, kept = multi._large_relaxation(model, relax, row_keys, None, lps, lambda: None,
                                         lazy=True)
    assert out.status == whole.status == "optimal"
    assert out.objective == pytest.approx(whole.objective, rel=1e-9, abs=1e-9)
    box = _box_keys(row_keys)
    assert kept < box and len(box) - len(kept) >= len(box) // 4
    left_out = [r for r, k in enumerate(row_keys) if k in box - kept]
    assert (out.basis.row[left_out] == BASIS_BASIC).all()
    again = solve_highs(relax, basis=out.basis, warm_iterations=0)
    assert again.warm_started is True and again.iterations == 0
    assert again.objective == pytest.approx(whole.objective, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("coupled", [False, True])
def test_lazy_boxes_give_the_optimum_of_every_row_on_the_tsos_sequence(coupled):
    """The TSO's sequence (frame, refinement, next frame, its refinement; 12 areas), each
    clearing warm-started from the one before and every LP relaxation large
    (``ipm_rows=0``): the same status, cost and points with and without lazy box rows;
    the lazy side carried fewer box rows than the full blocks have."""
    steps, mv, request = _sequence(coupled)
    results = {}
    for lazy in (False, True):
        prev, full, out = None, (), []
        for pk in steps:
            r = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full, warm=prev,
                             ipm_rows=0, lazy_boxes=lazy)
            out.append(r)
            prev, full = r, r.full_names
        results[lazy] = out
    omitted = 0
    for a, b in zip(results[False], results[True]):
        _same_optimum(b, a)
        assert a.ok
        assert not a.lp_basis.box_rows
        omitted += len(_box_keys(b.lp_basis.last_rows)) - len(b.lp_basis.box_rows)
    assert omitted > 0


@pytest.mark.parametrize("coupled", [False, True])
def test_adding_rows_that_fails_ends_by_the_interior_point_method(monkeypatch, coupled):
    """When the simplex does not end optimal after rows were added (numerics, the time
    limit), the relaxation is solved again by the interior point method over the rows held
    so far and goes on adding: still HiGHS's objective of the whole relaxation."""
    model, relax, row_keys, whole = _whole_and_lazy(coupled)
    failed = []
    original = multi._RowAdding.add

    def add_failing_once(self, rows, time_limit_s):
        if not failed:
            failed.append(len(rows))
            return None, 0
        return original(self, rows, time_limit_s)

    monkeypatch.setattr(multi._RowAdding, "add", add_failing_once)
    out, _ = multi._large_relaxation(model, relax, row_keys, None, multi._LpState(),
                                     lambda: None, lazy=True)
    assert failed, "no row was added: the test did not reach the fallback"
    assert out.status == whole.status == "optimal"
    assert out.objective == pytest.approx(whole.objective, rel=1e-9, abs=1e-9)


def test_a_warm_start_that_fails_leaves_every_box_row_out_of_the_interior_point_method(
        monkeypatch):
    """A relaxation whose warm start runs out of iterations is solved by the interior
    point method without any bid-box row (they are added as violated): every IPM solve of
    the TSO's sequence holds none, and the sequence keeps its optimum."""
    steps, mv, request = _sequence(True)
    monkeypatch.setattr(multi, "WARM_LP_ITERATIONS", 0)
    original, relaxation = multi.solve_highs, multi._large_relaxation
    without_box: list[int] = []       # per relaxation: the rows of the LP without box rows
    ipm_rows: list[tuple[int, int]] = []

    def large(model, lp, row_keys, basis, lps, left, *, lazy):
        without_box.append(len(row_keys) - len(_box_keys(row_keys)))
        return relaxation(model, lp, row_keys, basis, lps, left, lazy=lazy)

    def spy(lp, **kw):
        if kw.get("cold") == "ipm" and without_box:
            ipm_rows.append((lp.a.shape[0], without_box[-1]))
        return original(lp, **kw)

    monkeypatch.setattr(multi, "_large_relaxation", large)
    monkeypatch.setattr(multi, "solve_highs", spy)
    prev, full = None, ()
    for pk in steps:
        r = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full, warm=prev,
                         ipm_rows=0)
        ref = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full,
                           ipm_rows=None, lazy_boxes=False)
        _same_optimum(r, ref)
        prev, full = r, r.full_names
    assert len(ipm_rows) == len(without_box) > len(steps)   # every warm start failed here
    assert all(held == expected for held, expected in ipm_rows)
