"""The region clearing's branching over points (flexcore.market.multi._branch, step 2 of
_start) against the m^N enumeration: it ends clearings at an incumbent within the gap that
the former incumbent (nearest point, rounding, k-th points) left to HiGHS's MILP."""
from __future__ import annotations

import numpy as np
import pytest

from flexcore.exchange.enums import ClearingStatus
from flexcore.market.multi import clear_region, enumerate_regions
from tests.test_region_market import _areas

GAP = 1e-3

#: (seed, coupled, request as a fraction of the bid total): 4 areas of 3 points, cases in
#: which the former incumbent was not within GAP of the LP bound (HiGHS's MILP ran)
CASES = [(2, True, 0.3), (8, False, 0.7), (18, True, 0.3), (51, True, 0.5)]


@pytest.mark.parametrize("seed, coupled, frac", CASES)
def test_incumbent_search_ends_at_the_enumerated_optimum(seed, coupled, frac):
    areas, mv = _areas(seed, n_areas=4, coupled=coupled)
    req = frac * sum(a.bids.volume_mw.sum() for a in areas)
    best, count = enumerate_regions(areas, req, mv=mv)
    assert best is not None and count == 3 ** 4 * (2 if coupled else 1)
    for lazy in (False, True):
        new = clear_region(areas, req, mv=mv, mip_rel_gap=GAP, lazy=lazy)
        old = clear_region(areas, req, mv=mv, mip_rel_gap=GAP, lazy=lazy,
                           incumbent_search=False)
        assert new.status == old.status == ClearingStatus.OPTIMAL
        for r in (new, old):         # both within the gap of the enumerated optimum
            assert best.cost_eur_per_h - 1e-6 <= r.cost_eur_per_h \
                <= best.cost_eur_per_h * (1 + GAP) + 1e-6
            x = np.concatenate([r.activation_mw[a.name] for a in areas])
            assert x.sum() == pytest.approx(req, abs=1e-7)
        if not lazy:     # the full formulation: the search ended it, the MILP did not
            assert new.message.startswith("incumbent within mip_rel_gap")
            assert old.message == ""
        # deterministic: the same clearing twice
        again = clear_region(areas, req, mv=mv, mip_rel_gap=GAP, lazy=lazy)
        assert again.cost_eur_per_h == new.cost_eur_per_h and again.points == new.points


def test_incumbent_search_within_the_gap_on_many_cases():
    """Random cases, coupled and not: the search's clearing is within the gap of the
    enumeration (or infeasible with it), and never needs the MILP more often than the
    former incumbent."""
    milps = {True: 0, False: 0}
    for seed in range(3):
        for coupled in (False, True):
            areas, mv = _areas(100 + seed, n_areas=3, coupled=coupled)
            total = sum(a.bids.volume_mw.sum() for a in areas)
            for frac in (0.3, 0.8):
                best, _ = enumerate_regions(areas, frac * total, mv=mv)
                for search in (True, False):
                    r = clear_region(areas, frac * total, mv=mv, mip_rel_gap=GAP,
                                     lazy=False, incumbent_search=search)
                    if best is None:
                        assert r.status == ClearingStatus.INFEASIBLE
                        continue
                    assert best.cost_eur_per_h - 1e-6 <= r.cost_eur_per_h \
                        <= best.cost_eur_per_h * (1 + GAP) + 1e-6
                    milps[search] += r.message == ""
    assert milps[True] <= milps[False]


def test_branching_out_of_budget_leaves_the_rest_to_the_milp(monkeypatch):
    """With a budget of one LP the branching cannot close the tree: HiGHS's MILP (started
    from the best incumbent) ends the clearing, at the enumerated optimum."""
    import flexcore.market.multi as multi

    seed, coupled, frac = CASES[0]
    areas, mv = _areas(seed, n_areas=4, coupled=coupled)
    req = frac * sum(a.bids.volume_mw.sum() for a in areas)
    best, _ = enumerate_regions(areas, req, mv=mv)
    monkeypatch.setattr(multi, "BRANCH_LPS", 1)
    r = clear_region(areas, req, mv=mv, mip_rel_gap=GAP, lazy=False)
    assert r.status == ClearingStatus.OPTIMAL and r.message == ""     # the MILP's
    assert best.cost_eur_per_h - 1e-6 <= r.cost_eur_per_h \
        <= best.cost_eur_per_h * (1 + GAP) + 1e-6
