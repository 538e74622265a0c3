"""The default unit classes run as arrays (flexcore.fpu.fleet) give the same bits as the unit
objects: FPUSim with ``ARRAYS`` on and off, driven frame by frame with the same random
set-points (inside, at and beyond the offered ranges), over EV sessions across midnight in
a calendar run and over a day-type change (fresh units), gives identical offers, powers,
clipping, flags and unit records; a unit whose state turns NaN is flagged the same way; the
unit objects carry the state the arrays computed."""
from __future__ import annotations

import math

import numpy as np
import pytest

import simulators.fpu_sim as fpu_sim
from flexcore.district.clock import FrameClock
from flexcore.fpu.fleet import array_groups


def _sim(clock: FrameClock, arrays: bool, monkeypatch) -> fpu_sim.FPUSim:
    monkeypatch.setattr(fpu_sim, "ARRAYS", arrays)
    sim = fpu_sim.FPUSim()
    sim.init("FPUSim-0")
    sim.create(1, "Fleet", grid="bergwald", buildings="bergwald", seed=5, pv_penetration=0.6,
               clock=clock.to_dict())
    return sim


def _named(sim, offers):
    umap = sim.unit_map()
    return [{**o, "bid_id": f"{umap[o['bid_id']]['unit_id']}:{umap[o['bid_id']]['direction']}"}
            for o in offers]


def _same(a, b, where):
    """Exact equality of nested outputs (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{k}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} vs {b!r}"


def _run(clock: FrameClock, arrays: bool, monkeypatch, *, poison: int | None = None):
    sim = _sim(clock, arrays, monkeypatch)
    rng = np.random.default_rng(11)
    outs = []
    for k in range(len(clock)):
        t = clock.time_of(k)
        if poison is not None and k == poison:
            next(u for u in sim.units if u.unit_id.endswith(".battery")).soc = float("nan")
        sim.step(t, {}, None)
        offers = _named(sim, sim._out["offers"])
        named = {o["bid_id"]: o["volume_mw"] for o in offers}
        chosen = [b for b in sorted(named) if rng.random() < 0.3]
        factor = rng.choice([0.5, 1.0, 1.5, -0.2], size=len(chosen))
        setpoints = {b: float(named[b] * f) for b, f in zip(chosen, factor)}
        back = {f"{v['unit_id']}:{v['direction']}": p for p, v in sim.unit_map().items()}
        sim.step(t, {"Fleet": {"setpoint[MW]": {"TSO": {back[b]: x
                                                         for b, x in setpoints.items()}}}},
                 None)
        out = dict(sim._out)
        outs.append({"offers": offers, **{a: out[a] for a in
                                          ("P[MW]", "dP[MW]", "clipped", "flagged", "units")}})
    return sim, outs


@pytest.mark.parametrize("clock", [
    FrameClock.for_calendar("2025-01-03T15:00", "2025-01-04T09:00"),
    FrameClock.for_day_types(["winter_workday", "summer_saturday"], range(70, 78)),
], ids=["calendar-across-midnight", "two-day-types"])
def test_arrays_give_the_bits_of_the_unit_objects(clock, monkeypatch):
    sim, arrays = _run(clock, True, monkeypatch)
    groups = array_groups(sim.units, sim._profiles)
    assert sum(len(pos) for _, pos in groups) == len(sim.units)  # all default units as arrays
    assert {type(g).__name__ for g, _ in groups} == {
        "BatteryGroup", "EVGroup", "HeatPumpGroup", "FlexLoadGroup", "PVGroup"}
    _, objects = _run(clock, False, monkeypatch)
    assert any(o["clipped"] for o in objects) and any(o["offers"] for o in objects)
    plugged = [sum(x or 0 for x in o["units"]["state"]["plugged"]) for o in objects]
    assert max(plugged) > 0
    _same(arrays, objects, "frames")


def test_a_state_gone_nan_gives_what_the_objects_give(monkeypatch):
    """A battery's SOC set to NaN between frames (the arrays read the objects' state): the
    Python ``max``/``min`` of the class turn it into an empty battery that offers only
    downward, the arrays do the same (not NaN as ``np.maximum`` would)."""
    clock = FrameClock.for_day_types(["winter_workday"], range(70, 74))
    _, arrays = _run(clock, True, monkeypatch, poison=2)
    _, objects = _run(clock, False, monkeypatch, poison=2)
    uid = arrays[0]["units"]["unit_id"].index(next(
        u for u in arrays[0]["units"]["unit_id"] if u.endswith(".battery")))
    assert arrays[1]["units"]["state"]["soc"][uid] is not None
    assert arrays[2]["units"]["state"]["soc"][uid] is None
    _same(arrays, objects, "frames")
