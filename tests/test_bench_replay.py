"""``bench.bench_region_replay --only``: replaying recorded clearings one way gives the
clearings the direct calls give (each call warm from the replay's previous result)."""
from __future__ import annotations

import pickle

import pytest

from bench.bench_region_replay import replay_one
from flexcore.market.multi import clear_region
from tests.test_region_lpwarm import _sequence


def test_replaying_one_side_gives_the_direct_clearings(capsys):
    steps, mv, request = _sequence(True)
    calls = [pickle.dumps(((pk, request), {"mv": mv, "mip_rel_gap": 1e-9, "ipm_rows": 0}))
             for pk in steps]
    total = replay_one(calls, "boxes", "lazy")
    printed = [line for line in capsys.readouterr().out.splitlines() if "cost" in line]
    prev = None
    for k, (pk, line) in enumerate(zip(steps, printed, strict=True)):
        r = clear_region(pk, request, mv=mv, mip_rel_gap=1e-9, ipm_rows=0, warm=prev)
        assert line.startswith(f"{k:3d}: optimal")
        assert float(line.rsplit("cost ", 1)[1]) == pytest.approx(r.cost_eur_per_h, rel=1e-9)
        prev = r
    assert total > 0
