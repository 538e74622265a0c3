"""Validator (DSO side): the TSO's predictions vs the GridSim AC power flow, per frame.

Row keys of the clearing map to buses / branches through the DSO's private KeyMap
(``dso/KEYMAP.json`` in the run folder). Voltages are compared directly, loadings as
magnitudes (docs/method.md "Validation"); MAE, RMSE and max error over the predicted rows.
AC limit violations are counted over every bus and branch of the GridSim result. Frames
without a dispatched clearing get NaN errors (violations are still counted).
"""
from __future__ import annotations

import numpy as np

from flexcore.exchange.limits import ErrorStats, Limits, violations
from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (("Vm[pu]", "GridSim voltages"), ("loading[%]", "GridSim signed loadings"),
            ("converged", "GridSim converged"), ("clearing", "TSO frame record"),
            ("report", "DSO frame report (its own predictions, package format 2)"))
ATTRS_OUT = (("accuracy", "errors and AC violations of the frame"),)
META = meta_from_table({"Validator": {
    "public": True,
    "params": ["keymap", "limits", "clock"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


class Validator(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.keymap = None

    def create(self, num, model, *, keymap: str, limits: dict, clock: dict | None = None):
        from flexcore.dso.keymap import KeyMap

        self.keymap = KeyMap.load(keymap)
        self._vm_key = {k: str(b) for k, b in self.keymap.vm_pu.items()}
        self._ld_key = {k: f"{e}:{i}" for k, (e, i) in self.keymap.loading_percent.items()}
        self.limits = Limits.from_dict(limits)
        return [{"eid": "Validator", "type": model}]

    def step(self, time, inputs, max_advance):
        data = inputs.get("Validator", {})
        one = {a: next(iter(v.values())) for a, v in data.items()}
        vm, ld = one.get("Vm[pu]", {}), one.get("loading[%]", {})
        clearing = one.get("clearing", {})
        acc = {"ac_converged": bool(one.get("converged", False))}
        if acc["ac_converged"]:
            v = np.array(list(vm.values()), float)
            lp = np.array(list(ld.values()), float)
            acc["ac_violations"] = len(violations(self.limits, vm_pu=v, vm_keys=list(vm),
                                                  loading_percent=lp, loading_keys=list(ld)))
        report = one.get("report", {})  # format 2: predictions are the DSO's
        pv = clearing.get("predicted_vm_pu") or report.get("predicted_vm_pu", {})
        pl = (clearing.get("predicted_loading_percent")
              or report.get("predicted_loading_percent", {}))
        if acc["ac_converged"] and pv:
            ev = [x - vm[self._vm_key[k]] for k, x in pv.items()]
            el = [abs(x) - abs(ld[self._ld_key[k]]) for k, x in pl.items()]
        else:
            ev = el = []
        sv, sl = ErrorStats.of(ev), ErrorStats.of(el)
        acc["vm_mae_pu"], acc["vm_rmse_pu"], acc["vm_max_err_pu"] = sv.mae, sv.rmse, sv.max_abs
        (acc["loading_mae_percent"], acc["loading_rmse_percent"],
         acc["loading_max_err_percent"]) = sl.mae, sl.rmse, sl.max_abs
        self._out = {"accuracy": acc}
        return None


def main() -> None:
    from simulators import start_simulation

    start_simulation(Validator())


if __name__ == "__main__":
    main()
