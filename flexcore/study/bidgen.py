"""A seeded single-frame bid set: one bid per building connection (the source's setting).

The co-simulation gets its bids from the FPU models (``flexcore.fpu``); this generator serves
the single-frame studies (Table 1, Figures 5-8), the CLI examples and the tests. Volumes are
what a building's units (battery, EV wallbox, heat pump) typically free up in one frame:
"""
from __future__ import annotations

import numpy as np

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


def synthetic_bids(net, *, seed: int = 0, table=None, price_eur_per_mwh=(40.0, 250.0),
                   downward_share: float = 0.0) -> BidTable:
    """One bid per in-service load (building); upward unless drawn downward (share).

    ``table`` (the building table) picks volumes by building type; without it every
    connection gets the single-house range.
    """
    rng = np.random.default_rng(seed)
    loads = net.load[net.load.in_service]
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
