"""The LP warm start of a refinement round after a new frame (flexcore.market.multi,
``ROUND_WARM_START``): exact (the cold optimum) and fewer simplex iterations than before."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import flexcore.market.multi as multi
from flexcore.market.direct import BASIS_BASIC, BASIS_NEW
from flexcore.market.multi import clear_region
from tests.test_region_market import _add_point, _areas, _same_optimum


def _sequence(coupled: bool):
    """Four clearings as the TSO makes them (12 areas): a frame's first clearing, its
    refinement round (a point added to every area), the next frame without that point (new
    numbers), and that frame's refinement round, whose new point takes the same index as
    the last frame's refinement point but sits elsewhere."""
    rng = np.random.default_rng(7)
    areas, mv = _areas(3, n_areas=12, coupled=coupled)
    total = sum(a.bids.volume_mw.sum() for a in areas)
    refined = [_add_point(a, rng, 0.8) for a in areas]
    frame2 = [replace(a, package=replace(a.package, vm_pu=a.package.vm_pu - 0.002))
              for a in areas]
    frame2_refined = [_add_point(a, rng, 0.3) for a in frame2]
    return [areas, refined, frame2, frame2_refined], mv, 0.45 * total


def _run(monkeypatch, coupled: bool, on: bool):
    """The sequence warm-started (``warm=`` the previous result), with ``ROUND_WARM_START``
    ``on``; per clearing the warm result, the cold one and, per LP relaxation, the surplus
    of basic variables of its starting basis before repair (new rows counted basic)."""
    monkeypatch.setattr(multi, "ROUND_WARM_START", on)
    surplus: list[int] = []
    original = multi._warm_basis

    def spy(model, lp, col_keys, row_keys, warm):
        out = original(model, lp, col_keys, row_keys, warm)
        basic = (out.col == BASIS_BASIC).sum() + np.isin(out.row, (BASIS_BASIC,
                                                                   BASIS_NEW)).sum()
        surplus.append(int(basic) - len(row_keys))
        return out

    monkeypatch.setattr(multi, "_warm_basis", spy)
    steps, mv, request = _sequence(coupled)
    prev = None
    full: tuple[str, ...] = ()
    out = []
    for pk in steps:
        surplus.clear()
        warm = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full, warm=prev)
        first = list(surplus)
        cold = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full,
                            lp_warm_start=False)
        out.append((warm, cold, first))
        prev, full = warm, warm.full_names
    return out


@pytest.mark.parametrize("coupled", [False, True])
def test_refinement_round_after_a_new_frame_starts_from_a_consistent_basis(monkeypatch,
                                                                            coupled):
    """Each warm clearing has the cold optimum, old and new start alike. In the last
    refinement round the old start took the statuses of the point with the same index
    two LP relaxations back (the last frame's refinement point, selected there): its
    basis had more basic variables than rows (repaired by demoting arbitrary rows); the
    new one takes a block's statuses from the last LP relaxation only and its count is
    exact. The new start needs fewer simplex iterations, in that round and overall."""
    old = _run(monkeypatch, coupled, on=False)
    new = _run(monkeypatch, coupled, on=True)
    for (w_old, cold, _), (w_new, _, _) in zip(old, new):
        _same_optimum(w_old, cold)
        _same_optimum(w_new, cold)
        assert w_new.lp_warm_rejected == 0
    assert old[3][2][0] > 0          # the old start: surplus basic variables
    assert new[3][2][0] == 0         # the new one: none
    it_old = [w.lp_iterations for w, _, _ in old]
    it_new = [w.lp_iterations for w, _, _ in new]
    print(f"simplex iterations old {it_old}, new {it_new}")
    assert it_new[3] < 0.7 * it_old[3]
    assert sum(it_new) < 0.8 * sum(it_old)
