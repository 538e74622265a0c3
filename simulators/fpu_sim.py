"""FPUSim: all flexibility units of the district (any plug-in class), one ``Fleet`` entity.

Per frame of the scenario's clock (mosaik time t = frame index * ``clock.step_s``; the units
step over frames of the clock's length, ``frame.duration_h``), hybrid simulator:

1. self-scheduled step at t: (at the first frame of each day type: fresh, seeded units)
   outputs ``offers`` (list of ``{bid_id, unit_id, volume_mw, price_eur_per_mwh, min_mw,
   indivisible}``; bid ids are stable: ``"<unit_id>:up"`` / ``"<unit_id>:down"``),
   ``P_base[MW]`` per unit and ``dP_base[MW]`` per building (sum of baseline - profile).
2. triggered step at the same time t by ``setpoint[MW]`` ({unit_id: MW deviation}):
   dispatches (clipping reported in ``clipped``), outputs the actual ``P[MW]`` per unit and
   ``dP[MW]`` per building (sum of power - profile: the grid adds it to the building's
   profile net injection), then steps the units.

The extra method ``catalog()`` lists every stable bid of the fleet with its unit and
building (the DSO needs it for its linearizer; the TSO for bid -> unit).
"""
from __future__ import annotations

import math
from collections import defaultdict

from flexcore.district.clock import FrameClock
from flexcore.fpu.base import contract_violation
from flexcore.grid.district_grid import building_table
from simulators import FrameSimulator, building_profiles, meta_from_table

DIRECTIONS = ("up", "down")
ATTRS_OUT = (
    ("offers", "bids of the frame (list of dicts, stable ids)"),
    ("P_base[MW]", "baseline injection per unit"),
    ("dP_base[MW]", "sum of (baseline - profile) per building: part of the fixed injections"),
    ("P[MW]", "actual injection per unit after dispatch"),
    ("dP[MW]", "sum of (power - profile) per building after dispatch"),
    ("clipped", "unit_id -> reason for set-points clipped to the feasible range"),
    ("flagged", "unit_id -> reason: units that broke the plug-in contract in the frame "
                "(neutralised: no offers, kept at baseline)"),
)
ATTRS_IN = (("setpoint[MW]", "unit_id -> cleared activation (MW deviation)"),)
META = meta_from_table({"Fleet": {
    "public": True,
    "params": ["grid", "buildings", "seed", "pv_penetration", "clock", "fpu"],
    "attrs": [a for a, _ in ATTRS_OUT + ATTRS_IN],
    "trigger": [a for a, _ in ATTRS_IN],
    "non-persistent": [a for a, _ in ATTRS_OUT],
}}, sim_type="hybrid", extra_methods=("catalog",))


class FPUSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.units = None
        self._offered_at = -1

    def create(self, num, model, *, grid: str, buildings: str, seed: int,
               pv_penetration: float, clock: dict, fpu: list[dict] | None = None):
        if num != 1 or self.units is not None:
            raise ValueError("FPUSim holds exactly one Fleet entity")
        from flexcore.fpu.assign import DEFAULT_FPU_CONFIG
        from flexcore.fpu.registry import parse_fpu_config

        self._table = building_table(buildings, grid)
        self._profiles = building_profiles(self._table, seed=seed, pv_penetration=pv_penetration)
        self._specs = parse_fpu_config({"fpu": fpu} if fpu else DEFAULT_FPU_CONFIG)
        self._seed = int(seed)
        self.clock = FrameClock.of(clock)
        self.frames = self.clock.frames
        self._reset()
        return [{"eid": "Fleet", "type": model}]

    def _reset(self) -> None:
        from flexcore.fpu.assign import assign_units

        self.units = assign_units(self._table, profiles=self._profiles, config=self._specs,
                                  seed=self._seed)
        self._day = None

    def catalog(self) -> list[dict]:
        """Every stable bid of the fleet: ``{bid_id, unit_id, building_id, direction}``."""
        return [{"bid_id": f"{u.unit_id}:{d}", "unit_id": u.unit_id,
                 "building_id": u.building_id, "direction": d}
                for u in self.units for d in DIRECTIONS]

    # ------------------------------------------------------------------ steps
    def step(self, time, inputs, max_advance):
        frame = self.clock.frame_at(time)
        setpoints = {}
        for attrs in inputs.values():
            for values in attrs.get("setpoint[MW]", {}).values():
                setpoints.update(values)
        if self._offered_at != time:
            self._offer(frame)
            self._offered_at = time
        else:
            self._dispatch(frame, setpoints)
        return time + self.clock.step_s

    def _offer(self, frame) -> None:
        if self._day is not None and self._day != frame.day_type:
            self._reset()
        self._day = frame.day_type
        offers, base, dbase = [], {}, defaultdict(float)
        self._flagged = {}
        for u in self.units:
            reason = contract_violation(u, frame)
            if reason:  # flag and neutralise: no offers, baseline (or profile) injection
                self._flagged[u.unit_id] = reason
            else:
                for o in u.offers(frame):
                    offers.append({"bid_id": f"{u.unit_id}:{o.direction}",
                                   "unit_id": u.unit_id, "volume_mw": o.volume_mw,
                                   "price_eur_per_mwh": o.price_eur_per_mwh,
                                   "min_mw": o.min_mw, "indivisible": o.indivisible})
            if reason:
                b, prof = _neutral_power_mw(u, frame), _neutral_profile_mw(u, frame)
            else:
                b, prof = u.baseline_mw(frame), u.profile_mw(frame)
            base[u.unit_id] = b
            dbase[u.building_id] += b - prof
        self._out = {"offers": offers, "P_base[MW]": base, "dP_base[MW]": dict(dbase),
                     "flagged": dict(self._flagged)}

    def _dispatch(self, frame, setpoints: dict[str, float]) -> None:
        power, dp, clipped = {}, defaultdict(float), {}
        flagged = getattr(self, "_flagged", {})
        for u in self.units:
            if u.unit_id in flagged:  # neutralised: no activation, state advanced at baseline
                p = _neutral_power_mw(u, frame)
                power[u.unit_id] = p
                dp[u.building_id] += p - _neutral_profile_mw(u, frame)
                u.advance(frame, p)
                continue
            d = u.dispatch(frame, float(setpoints.get(u.unit_id, 0.0)))
            if d.clipped:
                clipped[u.unit_id] = d.reason
            p = u.power_mw(frame)
            power[u.unit_id] = p
            dp[u.building_id] += p - u.profile_mw(frame)
            u.step(frame)
        self._out = {"P[MW]": power, "dP[MW]": dict(dp), "clipped": clipped,
                     "flagged": dict(flagged)}


def _finite_or(x, default: float) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


def _neutral_profile_mw(unit, frame) -> float:
    """A flagged unit's profile part (0 if not a finite number)."""
    return _finite_or(unit.profile_mw(frame), 0.0)


def _neutral_power_mw(unit, frame) -> float:
    """A flagged unit's power: its baseline if finite, else its profile part (the
    building then injects exactly its profile)."""
    return _finite_or(unit.baseline_mw(frame), _neutral_profile_mw(unit, frame))


def main() -> None:
    from simulators import start_simulation

    start_simulation(FPUSim())


if __name__ == "__main__":
    main()
