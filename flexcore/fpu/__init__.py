"""Flexibility-providing units (FPUs): the plug-in contract, reference models, registry.

See :mod:`flexcore.fpu.base` for the contract and the README section "Writing a flexibility
unit" for an example.
"""
from .base import Dispatch, FlexibilityUnit, Offer, UnitContext
from .registry import ALIASES, RegistryError, UnitSpec, load_unit_class, parse_fpu_config

__all__ = [
    "ALIASES",
    "Dispatch",
    "FlexibilityUnit",
    "Offer",
    "RegistryError",
    "UnitContext",
    "UnitSpec",
    "load_unit_class",
    "parse_fpu_config",
]
