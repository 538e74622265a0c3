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
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexcore.district.buildings import BUILDING_TYPES
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


#: the plug-in contract's methods -> the arguments they are called with (after ``self``);
#: ``(name, args, required)``: a class must provide the required ones (not abstract)
CONTRACT: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("baseline_mw", ("frame",), True),
    ("feasible_range_mw", ("frame",), True),
    ("advance", ("frame", "power_mw"), True),
    ("state", (), False),
    ("profile_mw", ("frame",), False),
    ("offers", ("frame",), False),
)


def check_unit_class(cls: type, spec: str = "") -> None:
    """Check a plug-in class against the contract before any unit is built: every method
    present, callable and accepting the documented arguments (``inspect.signature``), the
    abstract ones implemented, the constructor accepting ``(unit_id, building_id, *, rng,
    context)``. Raises :class:`RegistryError` naming the class and the method."""
    name = spec or f"{cls.__module__}:{cls.__qualname__}"
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise RegistryError(f"unit class {name!r}: does not implement {abstract}")
    for method, args, _required in CONTRACT:
        fn = inspect.getattr_static(cls, method, None)
        if isinstance(fn, (staticmethod, classmethod)):
            raise RegistryError(f"unit class {name!r}: {method} must be a plain method "
                                f"{method}(self, {', '.join(args)})")
        fn = getattr(cls, method, None)
        if not callable(fn):
            raise RegistryError(f"unit class {name!r}: {method} is not a method")
        _check_call(name, method, fn, ("self",) + args, {})
    _check_call(name, "__init__", cls.__init__, ("self", "unit_id", "building_id"),
                {"rng": None, "context": None})


def _check_call(name: str, method: str, fn: Any, args: tuple[str, ...],
                kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        documented = ", ".join(args[1:]) + "".join(f", *, {k}" if i == 0 else f", {k}"
                                                   for i, k in enumerate(kwargs))
        raise RegistryError(f"unit class {name!r}: {method}{sig} does not match the "
                            f"contract {method}({documented}) ({exc})") from None


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
    check_unit_class(cls, spec)
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
        named = set(penetration) | {str(t) for t in types or ()}
        unknown_types = sorted(named - set(BUILDING_TYPES))
        if unknown_types:
            raise RegistryError(f"{where} ({path}): unknown building type(s) {unknown_types}; "
                                f"valid: {list(BUILDING_TYPES)}")
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
