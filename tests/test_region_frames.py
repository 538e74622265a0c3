"""How a DSO starts a new frame (:class:`flexcore.region.dsos.FramePolicy`), in the
in-process study (:func:`flexcore.region.study.run_region` with ``previous``): the sides
and links carried from the previous frame, and the warm point at its cleared activation.
The agents follow the same policy (``tests/test_region_cosim_exact.py``)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from flexcore.dso.privacy import normalise_sides
from flexcore.region.dsos import FramePolicy
from flexcore.region.publish import LazyPublication
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import small_region

SHARE = 0.4
KW = {"max_rounds": 3, "mip_rel_gap": 1e-7, "time_limit_s": 60.0, "privacy": "exact"}
NONE = FramePolicy(carry_frames=False, warm_point=False)


@pytest.fixture(scope="module")
def data():
    region = split_region(small_region(n_lv=4), source="small")
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    return region, bids, SHARE * sum(b.volume_mw.sum() for b in bids.values())


def _new_frame(setup) -> None:
    """The same loads again (the cached round-0 packages): a second frame."""
    for d in setup.lv:
        d.relinearize()
    setup.mv.relinearize()


def _two_frames(data, policy: FramePolicy):
    region, bids, request = data
    setup = setup_region(region, bids, secret="frames")
    first = run_region(setup, request, **KW)
    _new_frame(setup)
    return setup, first, run_region(setup, request, previous=first, policy=policy, **KW)


def _clearings(rep) -> int:
    return sum(h["published"]["clearings"] for h in rep.history)


def _names(sides) -> set:
    return {nm for nms, sel in zip(sides.names, sides.selected) for nm, s in zip(nms, sel)
            if s}


def test_carried_sides_are_those_published_in_the_previous_frame(data):
    """A DSO's first package of a frame holds exactly the sides at or past a limit at
    x = 0 and the sides (by name) and links it published at the end of the previous
    frame; without the carry, only the former."""
    region, bids, request = data
    setup = setup_region(region, bids, secret="frames")
    first = run_region(setup, request, **KW)
    _new_frame(setup)
    prev = first.published
    carried = LazyPublication.start(setup, request, 0, previous=prev)
    fresh = LazyPublication.start(setup, request, 0)
    assert sum(len(_names(s)) for s in prev.lv) > 0 and prev.mv.linked
    for new, old, bare in zip(carried.lv + [carried.mv], prev.lv + [prev.mv],
                              fresh.lv + [fresh.mv]):
        at_limit = _names(bare)
        for a, c, nms, sel, link in zip(bare.a, bare.c, bare.names, bare.selected,
                                        bare.link):
            _, rhs, _ = normalise_sides(a, c)
            assert {nm for nm, s in zip(nms, sel) if s} == {
                nm for nm, r, lk in zip(nms, rhs, link) if r <= 0 and lk < 0}
        assert _names(new) == at_limit | _names(old)
        assert new.linked == old.linked
        # a strict subset of the DSO's private sides
        assert new.published_sides < sum(len(c) for c in new.c)
    assert carried.mv.linked and not fresh.mv.linked


def test_carry_gives_the_same_cost_with_fewer_clearings(data):
    setup, first, none = _two_frames(data, NONE)
    _, _, carry = _two_frames(data, replace(NONE, carry_frames=True))
    assert none.status == carry.status == "optimal"
    assert carry.cost_eur_per_h == pytest.approx(none.cost_eur_per_h, rel=1e-9)
    assert none.cost_eur_per_h == pytest.approx(first.cost_eur_per_h, rel=1e-9)
    assert carry.rounds == none.rounds
    assert _clearings(carry) < _clearings(none) == _clearings(first)
    assert carry.ac_safe and none.ac_safe


def test_warm_point_saves_the_refinements_of_an_unchanged_frame(data):
    """The same loads again: the warm point at the previous frame's activation (LV at
    its slack change, MV at the measured draws) is the clearing's own point, so no DSO
    refines; the cost is within the refinement's accuracy of the refined one and AC-safe
    with errors within Table 1."""
    from flexcore.region.study import TABLE1_LOADING_PERCENT, TABLE1_VM_PU

    _, first, none = _two_frames(data, NONE)
    setup, _, warm = _two_frames(data, replace(NONE, warm_point=True))
    assert none.rounds == first.rounds > 0
    assert warm.rounds == 0 and warm.ac_safe
    assert warm.max_vm_err_pu <= TABLE1_VM_PU
    assert warm.max_loading_err_percent <= TABLE1_LOADING_PERCENT
    assert warm.cost_eur_per_h == pytest.approx(none.cost_eur_per_h, rel=1e-5)
    # one more point (round 0: 3 fractions + the warm point) in every active area, none
    # counted as a round
    active = [d for d in setup.lv if np.any(np.abs(first.dispatch.activation_mw[d.name])
                                            > 1e-9)]
    assert active and all(d.package.m == 4 and d.rounds == 0 for d in active)
    assert setup.mv.package.m == 4 and setup.mv.rounds == 0
