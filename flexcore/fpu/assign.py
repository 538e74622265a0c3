"""Assign flexibility units to the buildings of a district (seeded, by type and penetration).

Default fleet (:data:`DEFAULT_FPU_CONFIG`, shares of the buildings of each type):

==================  ===================================================  ==========================
unit                penetration                                           size
==================  ===================================================  ==========================
battery             30 % single houses and duplexes, 20 % townhouses      10 kWh, 6 kW
ev                  40 % single houses, duplexes, townhouses;             11 kW wallbox, 60 kWh
                    50 % apartment towers (one shared wallbox)
heat_pump           30 % single houses, 20 % duplexes and townhouses      sized from floor area
pv_curtailment      every building with PV                                its PV system
flexible_load       every shop, school, community centre, apartment       20 % of the demand
                    tower
==================  ===================================================  ==========================

For each spec and building type, ``round(share * n_type)`` buildings are drawn without
replacement by a generator seeded with ``(seed, spec position)``; unit generators are
seeded with ``(seed, spec position, building id)``. Same seed and table -> identical units.
Unit ids are ``"<building_id>.<spec name>"``, e.g. ``"B017.battery"``.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from .base import FlexibilityUnit, UnitContext
from .registry import UnitSpec, parse_fpu_config

_HOUSES = ("single_house", "duplex", "townhouse")

DEFAULT_FPU_CONFIG: dict[str, list[dict[str, Any]]] = {
    "fpu": [
        {"class": "battery", "penetration": {"single_house": 0.3, "duplex": 0.3, "townhouse": 0.2},
         "params": {"capacity_kwh": 10.0, "power_kw": 6.0}},
        {"class": "ev", "penetration": {"single_house": 0.4, "duplex": 0.4, "townhouse": 0.4,
                                        "apartment_tower": 0.5},
         "params": {"power_kw": 11.0}},
        {"class": "heat_pump",
         "penetration": {"single_house": 0.3, "duplex": 0.2, "townhouse": 0.2}},
        {"class": "pv_curtailment", "building_types": list(_HOUSES) + [
            "apartment_tower", "school", "community_centre", "shop"], "penetration": 1.0},
        {"class": "flexible_load", "building_types": [
            "shop", "school", "community_centre", "apartment_tower"], "penetration": 1.0},
    ]
}


def building_context(profiles: Any | None, row: Mapping[str, Any]) -> UnitContext:
    """UnitContext of one building; ``profiles`` is a BuildingProfiles (or None: zeros)."""
    if profiles is None:
        return UnitContext(building=dict(row))
    bid = str(row["building_id"])
    return UnitContext(
        load_mw=partial(profiles.load_mw, bid),
        pv_mw=partial(profiles.pv_mw, bid),
        building=dict(row),
    )


def assign_units(
    table: pd.DataFrame,
    *,
    profiles: Any | None = None,
    config: Mapping[str, Any] | Sequence[UnitSpec] | None = None,
    seed: int = 0,
) -> list[FlexibilityUnit]:
    """Build the units of a district.

    ``table``: building table; ``profiles``: the district's BuildingProfiles (gives each
    unit its building's load and PV, and which buildings have PV; without it units with
    ``requires_pv`` are not assigned); ``config``: a TOML-like dict with ``fpu`` entries,
    or parsed :class:`UnitSpec` s (default :data:`DEFAULT_FPU_CONFIG`).
    """
    if config is None:
        config = DEFAULT_FPU_CONFIG
    specs = list(config) if (isinstance(config, Sequence)
                             and all(isinstance(s, UnitSpec) for s in config)) \
        else parse_fpu_config(config)
    rows = table.to_dict("records")
    has_pv = np.zeros(len(rows), bool)
    if profiles is not None:
        kwp = dict(zip(profiles.building_ids, profiles.pv_kwp))
        has_pv = np.array([kwp.get(str(r["building_id"]), 0.0) > 0 for r in rows])
    contexts: dict[int, UnitContext] = {}
    units: list[FlexibilityUnit] = []
    for pos, spec in enumerate(specs):
        rng = np.random.default_rng([int(seed), pos])
        chosen: set[int] = set()
        for btype, share in spec.penetration.items():
            idx = [k for k, r in enumerate(rows) if r["type"] == btype
                   and (has_pv[k] or not spec.cls.requires_pv)]
            n = int(round(share * len(idx)))
            if n:
                chosen.update(int(i) for i in rng.choice(np.array(idx), size=n, replace=False))
        for k in sorted(chosen):
            row = rows[k]
            bid = str(row["building_id"])
            if k not in contexts:
                contexts[k] = building_context(profiles, row)
            unit_rng = np.random.default_rng([int(seed), pos, zlib.crc32(bid.encode())])
            units.append(spec.build(f"{bid}.{spec.name}", bid, rng=unit_rng, context=contexts[k]))
    return units
