"""How the region's large LP relaxations are solved (flexcore.market.multi ``IPM_ROWS``,
``WARM_LP_ITERATIONS``; flexcore.market.direct ``LpMethod``): the simplex from the last
basis for at most so many iterations, else the interior point method from scratch. Exact:
the same optimum as the simplex, checked on a hand-solvable LP and on the TSO's sequence of
clearings."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import flexcore.market.multi as multi
from flexcore.market.direct import (
    BASIS_BASIC,
    BASIS_LOWER,
    BASIS_UPPER,
    BasisStatus,
    LinearProgram,
    LpMethod,
    solve_highs,
)
from flexcore.market.multi import clear_region
from tests.test_region_lpwarm import _sequence
from tests.test_region_market import _same_optimum


def _lp() -> LinearProgram:
    """min x1 + 2 x2 + 3 x3, x1 + x2 + x3 >= 1.5, 0 <= x <= 1: x = (1, 0.5, 0), cost 2."""
    return LinearProgram(cost=np.array([1.0, 2.0, 3.0]), col_lo=np.zeros(3),
                         col_hi=np.ones(3), a=sp.csr_matrix(np.ones((1, 3))),
                         row_lo=np.array([1.5]), row_hi=np.array([np.inf]),
                         integrality=np.zeros(3, np.int8))


@pytest.mark.parametrize("method", list(LpMethod))
def test_each_method_gives_the_vertex_and_its_basis(method):
    out = solve_highs(_lp(), cold=method, want_basis=True)
    assert out.status == "optimal" and out.objective == pytest.approx(2.0, abs=1e-9)
    np.testing.assert_allclose(out.x, [1.0, 0.5, 0.0], atol=1e-9)
    # a vertex (the IPM's crossover): x1 at its upper bound, x2 basic, x3 at its lower
    assert out.basis is not None
    assert out.basis.col.tolist() == [BASIS_UPPER, BASIS_BASIC, BASIS_LOWER]


def test_a_basis_far_from_the_optimum_is_dropped_after_the_iteration_limit():
    """From the basis with x3 basic (x = (0, 0, 1.5): beyond x3's bound) the simplex needs
    iterations; with ``warm_iterations=0`` it stops, and the LP is solved from scratch by
    ``cold``: the same optimum, ``warm_started`` False (``cold=None``: not solved). Without
    the limit it solves from the basis (``warm_started`` True)."""
    far = BasisStatus(np.array([BASIS_LOWER, BASIS_LOWER, BASIS_BASIC], np.int8),
                      np.array([BASIS_LOWER], np.int8))
    for limit, warm in ((0, False), (None, True)):
        out = solve_highs(_lp(), basis=far, warm_iterations=limit, cold=LpMethod.IPM)
        assert out.warm_started is warm
        assert out.objective == pytest.approx(2.0, abs=1e-9)
        np.testing.assert_allclose(out.x, [1.0, 0.5, 0.0], atol=1e-9)
    # cold=None: no solve from scratch, the caller is told (no x, warm_started False)
    out = solve_highs(_lp(), basis=far, warm_iterations=0, cold=None)
    assert out.warm_started is False and out.x is None and out.status != "optimal"


@pytest.mark.parametrize("coupled", [False, True])
def test_interior_point_rule_gives_the_simplex_optimum_on_the_tsos_sequence(monkeypatch,
                                                                            coupled):
    """The TSO's sequence (frame, refinement, next frame, its refinement; 12 areas), each
    clearing warm-started from the one before, with every LP relaxation under the rule
    (``ipm_rows=0``) and a limit of 3 warm iterations (so the IPM runs): the same status,
    cost and points as with the simplex alone (``ipm_rows=None``), and the rule did drop
    warm starts."""
    steps, mv, request = _sequence(coupled)
    monkeypatch.setattr(multi, "WARM_LP_ITERATIONS", 3)
    results = {}
    for label, rows in (("simplex", None), ("ipm", 0)):
        prev, full, out = None, (), []
        for pk in steps:
            r = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, warm_full=full, warm=prev,
                             ipm_rows=rows)
            out.append(r)
            prev, full = r, r.full_names
        results[label] = out
    for a, b in zip(results["simplex"], results["ipm"]):
        _same_optimum(b, a)
        assert a.ok
    assert sum(r.lp_warm_rejected for r in results["ipm"]) > 0
    assert sum(r.lp_warm_rejected for r in results["simplex"]) < sum(
        r.lp_warm_rejected for r in results["ipm"])
