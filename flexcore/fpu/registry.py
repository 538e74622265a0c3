"""Load FPU classes from strings and parse the ``[[fpu]]`` tables of a scenario TOML.

A class is named ``"package.module:Class"`` or by a short alias (:data:`ALIASES`)::

    [[fpu]]
    class = "flexcore.fpu.battery:HomeBattery"   # or "battery"
    building_types = ["single_house", "duplex"]
    penetration = 0.3                            # or {single_house = 0.3, duplex = 0.2}
    name = "battery"                             # optional: unit ids are "<building>.<name>"
    params = { capacity_kwh = 10.0, power_kw = 5.0 }
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexcore.errors import FlexcosimError

from .base import FlexibilityUnit, UnitContext

ALIASES: dict[str, str] = {
    "battery": "flexcore.fpu.battery:HomeBattery",
    "ev": "flexcore.fpu.ev:EVCharger",
    "heat_pump": "flexcore.fpu.heatpump:HeatPump",
    "pv_curtailment": "flexcore.fpu.pv:PVCurtailment",
    "flexible_load": "flexcore.fpu.flexload:FlexibleLoad",
}


class RegistryError(FlexcosimError, ValueError):
    """A unit class or an ``[[fpu]]`` entry cannot be loaded; the message names it."""


def load_unit_class(spec: str) -> type[FlexibilityUnit]:
    """The FlexibilityUnit subclass named by ``"package.module:Class"`` or an alias."""
    path = ALIASES.get(spec, spec)
    if not isinstance(path, str) or path.count(":") != 1:
        raise RegistryError(
            f"unit class {spec!r}: expected 'package.module:Class' or one of {sorted(ALIASES)}")
    module_name, class_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(
            f"unit class {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise RegistryError(
            f"unit class {spec!r}: module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, FlexibilityUnit)):
        raise RegistryError(
            f"unit class {spec!r}: {class_name!r} is not a FlexibilityUnit subclass")
    return cls


@dataclass(frozen=True)
class UnitSpec:
    """One ``[[fpu]]`` entry. ``penetration`` maps building type -> share (0..1)."""

    cls: type[FlexibilityUnit]
    class_path: str
    name: str
    penetration: Mapping[str, float]
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
              context: UnitContext | None = None) -> FlexibilityUnit:
        """Instantiate the unit (errors name the spec)."""
        try:
            return self.cls(unit_id, building_id, rng=rng, context=context, **dict(self.params))
        except TypeError as exc:
            raise RegistryError(f"[[fpu]] {self.name!r} ({self.class_path}): {exc}") from exc


def parse_fpu_config(config: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[UnitSpec]:
    """Parse ``{"fpu": [...]}`` (a loaded TOML document) or the list of ``[[fpu]]`` tables."""
    entries = config.get("fpu", []) if isinstance(config, Mapping) else config
    specs: list[UnitSpec] = []
    for k, entry in enumerate(entries):
        where = f"[[fpu]] #{k + 1}"
        if "class" not in entry:
            raise RegistryError(f"{where}: missing 'class'")
        unknown = set(entry) - {"class", "building_types", "penetration", "params", "name"}
        if unknown:
            raise RegistryError(f"{where}: unknown key(s) {sorted(unknown)}")
        path = str(entry["class"])
        cls = load_unit_class(path)
        pen = entry.get("penetration", 1.0)
        types = entry.get("building_types")
        if isinstance(pen, Mapping):
            penetration = {str(t): float(v) for t, v in pen.items()}
            if types is not None:
                penetration = {t: v for t, v in penetration.items() if t in set(types)}
        else:
            if types is None:
                raise RegistryError(
                    f"{where}: give 'building_types' or a per-type 'penetration' table")
            penetration = {str(t): float(pen) for t in types}
        bad = {t: v for t, v in penetration.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise RegistryError(f"{where}: penetration must be in [0, 1], got {bad}")
        params = entry.get("params", {})
        if not isinstance(params, Mapping):
            raise RegistryError(f"{where}: 'params' must be a table")
        name = str(entry.get("name") or (path if path in ALIASES else cls.alias))
        specs.append(UnitSpec(cls, ALIASES.get(path, path), name, penetration, dict(params)))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RegistryError(f"[[fpu]] names must be unique (set 'name'): {dup}")
    return specs
