"""An external flexibility unit: a battery as a plain mosaik simulator (mosaik_api_v3 only).

It talks to a ``Port`` of the FPU simulator (README, "Flexibility units as mosaik
simulators"); run it in its own process with the ``cmd`` starter::

    [[external_unit]]
    name = "ext_battery"
    building = "B12"
    cmd = "%(python)s -m scenarios.examples.ext_battery %(addr)s"
    model = "Battery"
    sim_params = { step_size = 900 }    # seconds per frame: the scenario's resolution_min * 60
    params = { capacity_kwh = 100.0, power_kw = 50.0 }

Hybrid simulator, per frame (mosaik time t, every ``step_size`` seconds):

1. self-scheduled step at t: outputs the baseline ``P[MW]`` (0: idle), the offers
   ``offer_up[MW]`` (discharge, bounded by the stored energy) and ``offer_down[MW]``
   (charge, <= 0, bounded by the headroom) deliverable over the whole frame, and the prices;
2. step at the same t triggered by ``setpoint[MW]`` (the cleared activation, sent by the
   port over a weak connection): applies it (clipped to the offered range) and advances
   the state of charge over the frame. Without a set-point the frame runs at the baseline.

Param ``log_csv`` (optional): a CSV file that gets one row per received set-point
(``time_s, setpoint_mw, applied_mw, soc, pid``: the simulator's process id), what the
tests compare with the run folder.
"""
from __future__ import annotations

import os

import mosaik_api_v3

META = {
    "api_version": "3.0",
    "type": "hybrid",
    "models": {"Battery": {
        "public": True,
        "params": ["capacity_kwh", "power_kw", "soc_init", "soc_min", "soc_max", "eta",
                   "price_up", "price_down", "log_csv"],
        "attrs": ["P[MW]", "offer_up[MW]", "offer_down[MW]", "price[EUR/MWh]",
                  "price_down[EUR/MWh]", "soc", "setpoint[MW]"],
        "trigger": ["setpoint[MW]"],
    }},
}


class Battery:
    """State of charge ``soc`` in [soc_min, soc_max]; efficiency ``eta`` each way."""

    def __init__(self, *, capacity_kwh=100.0, power_kw=50.0, soc_init=0.5, soc_min=0.1,
                 soc_max=0.95, eta=0.95, price_up=80.0, price_down=50.0, log_csv=None):
        if not 0 <= soc_min <= soc_init <= soc_max <= 1 or capacity_kwh <= 0 or power_kw < 0:
            raise ValueError("Battery: need 0 <= soc_min <= soc_init <= soc_max <= 1, "
                             "capacity_kwh > 0, power_kw >= 0")
        self.capacity_kwh, self.power_kw = float(capacity_kwh), float(power_kw)
        self.soc, self.soc_min, self.soc_max = float(soc_init), float(soc_min), float(soc_max)
        self.eta = float(eta)
        self.price_up, self.price_down = float(price_up), float(price_down)
        self.log_csv = log_csv
        if log_csv:
            with open(log_csv, "w") as f:
                f.write("time_s,setpoint_mw,applied_mw,soc,pid\n")

    def offer(self, hours: float) -> tuple[float, float]:
        """``(down <= 0, up >= 0)`` in MW, deliverable over a frame of ``hours``."""
        stored = max(0.0, (self.soc - self.soc_min) * self.capacity_kwh)
        headroom = max(0.0, (self.soc_max - self.soc) * self.capacity_kwh)
        up = min(self.power_kw, stored * self.eta / hours)
        down = min(self.power_kw, headroom / (self.eta * hours))
        return -down / 1000.0, up / 1000.0

    def apply(self, setpoint_mw: float, hours: float) -> float:
        """Run the frame at ``setpoint_mw`` (clipped to the offer); returns the applied MW."""
        down, up = self.offer(hours)
        p = min(max(float(setpoint_mw), down), up)
        kwh = p * 1000.0 * hours
        self.soc -= (kwh / self.eta if p > 0 else kwh * self.eta) / self.capacity_kwh
        self.soc = min(max(self.soc, self.soc_min), self.soc_max)
        return p


class BatterySim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.units: dict[str, Battery] = {}

    def init(self, sid, time_resolution=1.0, step_size=900):
        self.step_size = int(step_size)
        self.hours = self.step_size * float(time_resolution) / 3600.0
        return self.meta

    def create(self, num, model, **params):
        out = []
        for _ in range(num):
            eid = f"Battery-{len(self.units)}"
            self.units[eid] = Battery(**params)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time, inputs, max_advance):
        for eid, unit in self.units.items():
            sp = inputs.get(eid, {}).get("setpoint[MW]")
            if sp is not None:   # the triggered step: run the frame at the set-point
                x = sum(sp.values())
                applied = unit.apply(x, self.hours)
                if unit.log_csv:
                    with open(unit.log_csv, "a") as f:
                        f.write(f"{time},{x!r},{applied!r},{unit.soc!r},{os.getpid()}\n")
        return time + self.step_size

    def get_data(self, outputs):
        data = {}
        for eid, attrs in outputs.items():
            unit = self.units[eid]
            down, up = unit.offer(self.hours)
            values = {"P[MW]": 0.0, "offer_up[MW]": up, "offer_down[MW]": down,
                      "price[EUR/MWh]": unit.price_up, "price_down[EUR/MWh]": unit.price_down,
                      "soc": unit.soc}
            data[eid] = {a: values[a] for a in attrs if a in values}
        return data


def main() -> None:
    mosaik_api_v3.start_simulation(BatterySim(), "flexcosim example: an external battery",
                                   configure_logging=False)


if __name__ == "__main__":
    main()
