"""BuildingSim: load and PV of all buildings of the district, one entity, per frame.

One ``District`` entity; its outputs are ``{building_id: value}`` dicts for the current
frame (precomputed at init with ``BuildingProfiles.for_frames``). Time-based, one step per
frame of the scenario's clock (mosaik time = frame index * ``clock.step_s``), at the clock's
resolution (15 or 60 min: profile means over the frame).
"""
from __future__ import annotations

from flexcore.district.clock import FrameClock
from flexcore.grid.district_grid import building_table
from simulators import FrameSimulator, building_profiles, meta_from_table

ATTRS = (  # (attribute, meaning)
    ("P_load[MW]", "consumption per building (>= 0)"),
    ("Q_load[MVAr]", "inductive reactive consumption per building"),
    ("P_pv[MW]", "PV generation per building (>= 0)"),
)
META = meta_from_table({"District": {
    "public": True,
    "params": ["grid", "buildings", "seed", "pv_penetration", "clock"],
    "attrs": [a for a, _ in ATTRS],
}}, sim_type="time-based")


class BuildingSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self._data = None

    def create(self, num, model, *, grid: str, buildings: str, seed: int,
               pv_penetration: float, clock: dict):
        if num != 1 or self._data is not None:
            raise ValueError("BuildingSim holds exactly one District entity")
        table = building_table(buildings, grid)
        profiles = building_profiles(table, seed=seed, pv_penetration=pv_penetration)
        self.clock = FrameClock.of(clock)
        self._data = profiles.for_frames(self.clock.frames)
        self._ids = list(self._data.building_ids)
        return [{"eid": "District", "type": model}]

    def step(self, time, inputs, max_advance):
        k = self.clock.index_at(time)
        d = self._data
        self._out = {
            "P_load[MW]": dict(zip(self._ids, d.load_p_mw[k].tolist())),
            "Q_load[MVAr]": dict(zip(self._ids, d.load_q_mvar[k].tolist())),
            "P_pv[MW]": dict(zip(self._ids, d.pv_p_mw[k].tolist())),
        }
        return time + self.clock.step_s


def main() -> None:
    from simulators import start_simulation

    start_simulation(BuildingSim())


if __name__ == "__main__":
    main()
