"""Ports of the FPU simulator: flexibility units that run as their own mosaik simulators.

A ``Port`` entity of :class:`simulators.fpu_sim.FPUSim` stands for one external unit at one
building (params ``unit_id``, ``building``). Each frame the unit's simulator sends the
port its baseline and offers, and the port sends back the cleared activation::

    unit --P[MW], offer_up[MW], offer_down[MW], price[EUR/MWh], price_down[EUR/MWh]--> Port
    Port --setpoint[MW] (weak, same time)--> unit

Inside the fleet a port is an :class:`ExternalUnit`, a :class:`FlexibilityUnit` whose
baseline and feasible range are the values received for the frame: its offers take the
fleet's pseudonym path, its set-points follow the fleet's clipping policy, and its power
(``P[MW]`` + the applied activation) enters the building's ``dP[MW]`` like that of an
in-process add-on unit (``profile_mw`` = 0). Bad input (a missing or non-finite value, an
``offer_up[MW]`` < 0 or ``offer_down[MW]`` > 0, more than one source) flags the unit for the
frame: no offers, kept at ``P[MW]`` (or 0 without a finite ``P[MW]``), set-point 0.
The unit's own simulator keeps its state; the fleet never resets it (not even at a new day
type, where the in-process units start afresh).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame
from flexcore.fpu.base import Dispatch, FlexibilityUnit

#: (attribute, meaning) the unit's simulator sends to its port each frame
PORT_INPUTS = (
    ("P[MW]", "the unit's baseline power in the frame (signed injection, required)"),
    ("offer_up[MW]", "upward activation offered for the frame (>= 0, default 0)"),
    ("offer_down[MW]", "downward activation offered for the frame (<= 0, default 0)"),
    ("price[EUR/MWh]", "price of the upward offer (and of the downward one without "
                       "price_down[EUR/MWh]); required with an offer"),
    ("price_down[EUR/MWh]", "price of the downward offer (default: price[EUR/MWh])"),
)
#: (attribute, meaning) the port sends back
PORT_OUTPUTS = (
    ("setpoint[MW]", "cleared activation to apply over the frame (deviation from P[MW], "
                     "within the offered range; 0 when nothing was cleared)"),
)
#: the unit attributes a scenario must connect (the others: when the unit's model has them)
REQUIRED_INPUTS = ("P[MW]", "price[EUR/MWh]")
PORT_MODEL = {
    "public": True,
    "params": ["unit_id", "building"],
    "attrs": [a for a, _ in PORT_INPUTS + PORT_OUTPUTS],
    "trigger": [],
    "non-persistent": [a for a, _ in PORT_OUTPUTS],
}


class ExternalUnit(FlexibilityUnit):
    """The fleet's view of an external unit: the values its simulator sent for the frame."""

    alias = "external"

    def __init__(self, unit_id: str, building_id: str) -> None:
        super().__init__(unit_id, building_id, rng=np.random.default_rng(0))
        self.receive({})

    def receive(self, attrs: dict[str, dict[str, Any]]) -> None:
        """The frame's inputs ``{attr: {source: value}}``; ``problem`` names bad input."""
        self.problem = ""
        self.applied_mw = 0.0
        self._range: tuple[float, float] = (0.0, 0.0)
        values: dict[str, float] = {}
        for attr, sources in attrs.items():
            x = next(iter(sources.values()), None)
            if len(sources) != 1:
                problem = f"{attr}: {len(sources)} sources connected, need one"
            else:
                try:
                    values[attr] = float(x)
                    problem = "" if math.isfinite(values[attr]) else \
                        f"{attr} is {x!r}, not a finite number"
                except (TypeError, ValueError):
                    problem = f"{attr} is {x!r}, not a number"
            if problem:
                values.pop(attr, None)
                self.problem = self.problem or problem
        self._baseline: float = values.get("P[MW]", math.nan)   # kept: flagged or not
        up, down = values.get("offer_up[MW]", 0.0), values.get("offer_down[MW]", 0.0)
        price = values.get("price[EUR/MWh]")
        if self.problem:
            return
        if "P[MW]" not in values:
            self.problem = "no P[MW] received for the frame"
        elif up < 0 or down > 0:
            self.problem = (f"offer_up[MW] = {up:.6g}, offer_down[MW] = {down:.6g}: needs "
                            "offer_down <= 0 <= offer_up")
        elif price is None and (up or down):
            self.problem = "offers without price[EUR/MWh]"
        if self.problem:
            return
        self._range = (down, up)
        self.price_up_eur_per_mwh = price if price is not None else 0.0
        self.price_down_eur_per_mwh = values.get("price_down[EUR/MWh]",
                                                 self.price_up_eur_per_mwh)

    def baseline_mw(self, frame: Frame) -> float:
        return self._baseline

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        return self._range

    def advance(self, frame: Frame, power_mw: float) -> None:
        """Nothing: the unit's own simulator advances its state with ``setpoint[MW]``."""

    def dispatch(self, frame: Frame, setpoint_mw: float) -> Dispatch:
        d = super().dispatch(frame, setpoint_mw)
        self.applied_mw = d.applied_mw
        return d

    def state(self) -> dict[str, float]:
        return {"offer_up_mw": self._range[1], "offer_down_mw": self._range[0]}
