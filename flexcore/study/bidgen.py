"""A seeded single-frame bid set: one bid per building connection (the source's setting).

The co-simulation gets its bids from the FPU models (``flexcore.fpu``); this generator serves
the single-frame studies (Table 1, Figures 5-8), the CLI examples and the tests. Volumes are
what a building's units (battery, EV wallbox, heat pump) typically free up in one frame:
:data:`VOLUME_KW` per building type.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flexcore.exchange.bids import BidTable

#: upward volume range per building type, kW
VOLUME_KW = {
    "single_house": (8.0, 16.0),
    "duplex": (14.0, 26.0),
    "townhouse": (6.0, 12.0),
    "apartment_tower": (40.0, 80.0),
    "school": (50.0, 70.0),
    "community_centre": (20.0, 30.0),
    "shop": (10.0, 30.0),
}
DEFAULT_VOLUME_KW = (8.0, 16.0)


def shipped_building_table(net) -> pd.DataFrame | None:
    """The shipped Bergwald building table if every in-service load of ``net`` is named after
    one of its buildings (the Bergwald grid), else None."""
    from flexcore.district.buildings import load_building_table

    names = set(net.load.loc[net.load.in_service, "name"].astype(str))
    table = load_building_table()
    return table if names and names <= set(table["building_id"].astype(str)) else None


def synthetic_bids(net, *, seed: int = 0, table: pd.DataFrame | None | str = "auto",
                   price_eur_per_mwh=(40.0, 250.0), downward_share: float = 0.0) -> BidTable:
    """One bid per in-service load (building); upward unless drawn downward (share).

    Volumes are drawn from :data:`VOLUME_KW` by the building's type, taken from ``table``
    (a building table: ``building_id``, ``type``); the default ``"auto"`` uses the shipped
    Bergwald table when the loads are named after its buildings (:func:`shipped_building_table`),
    so ``synthetic_bids(load_grid("bergwald"), seed=1)`` offers 3.81 MW in 241 bids. With
    ``table=None`` (and for other grids) every connection gets the single-house range.
    Prices are uniform in ``price_eur_per_mwh`` (EUR/MWh).
    """
    rng = np.random.default_rng(seed)
    loads = net.load[net.load.in_service]
    if isinstance(table, str):
        if table != "auto":
            raise ValueError(f"table must be a building table, None or 'auto', not {table!r}")
        table = shipped_building_table(net)
    types = {}
    if table is not None:
        types = dict(zip(table["building_id"].astype(str), table["type"]))
    ids, vols, prices = [], [], []
    for name in loads["name"].astype(str):
        lo, hi = VOLUME_KW.get(types.get(name, ""), DEFAULT_VOLUME_KW)
        vol = rng.uniform(lo, hi) / 1000.0
        if rng.random() < downward_share:
            vol = -vol
        ids.append(f"bid-{name}")
        vols.append(round(vol, 6))
        prices.append(round(rng.uniform(*price_eur_per_mwh), 2))
    return BidTable(ids=tuple(ids), volume_mw=np.array(vols), price_eur_per_mwh=np.array(prices),
                    bus=loads["bus"].to_numpy(np.int64))
