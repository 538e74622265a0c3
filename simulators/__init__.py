"""Thin mosaik wrappers over flexcore (BuildingSim, FPUSim, GridSim) and their base class.

The district (building table, grid preparation) comes from
:mod:`flexcore.grid.district_grid`, the frames from the scenario's
:class:`flexcore.district.clock.FrameClock`, so that every simulator and agent sees the
same district and the same time axis: each simulator gets ``clock=clock.to_dict()`` (JSON,
so it crosses process boundaries) and maps mosaik time to frames with
``clock.index_at(time)``; the next step is ``time + clock.step_s``.
"""
from __future__ import annotations

from typing import Any

import mosaik_api_v3


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

