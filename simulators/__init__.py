"""Thin mosaik wrappers over flexcore (BuildingSim, FPUSim, GridSim) and their base class.

The district (building table, grid preparation) comes from
:mod:`flexcore.grid.district_grid`, the frames from the scenario's
:class:`flexcore.district.clock.FrameClock`, so that every simulator and agent sees the
same district and the same time axis.
"""
from __future__ import annotations

from typing import Any

import mosaik_api_v3

STEP_S = 900
"""mosaik seconds per 15-min frame: mosaik time = frame index * STEP_S."""


class FrameSimulator(mosaik_api_v3.Simulator):
    """Base of every flexcosim mosaik simulator: ``init`` returns the META given to the
    constructor, ``get_data`` serves the requested attributes from ``self._out`` (what the
    last ``step`` produced; attributes it did not produce are left out)."""

    def __init__(self, meta: dict) -> None:
        super().__init__(meta)
        self._out: dict = {}

    def init(self, sid, time_resolution=1.0, **sim_params):
        return self.meta

    def get_data(self, outputs):
        return {eid: {a: self._out[a] for a in attrs if a in self._out}
                for eid, attrs in outputs.items()}


def meta_from_table(models: dict[str, dict[str, Any]], *, sim_type: str,
                    extra_methods: tuple[str, ...] = ()) -> dict:
    """mosaik META from a compact table ``{model: {"public", "params", "attrs", ...}}``."""
    return {"api_version": "3.0", "type": sim_type, "models": models,
            "extra_methods": list(extra_methods)}


def building_profiles(table, *, seed: int, pv_penetration: float):
    from flexcore.district.profiles import BuildingProfiles

    return BuildingProfiles.from_table(table, seed=seed, pv_penetration=pv_penetration)


def frames_of(day_types, slots, resolution_min: int = 15):
    from flexcore.district.daytypes import make_frames

    return make_frames(day_types=list(day_types), slots=list(slots),
                       resolution_min=resolution_min)
