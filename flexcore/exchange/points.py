"""What both package formats share: an operating point's public description and the error
of a malformed package (kept apart so that format 1 (:mod:`flexcore.exchange.package`) and
format 2 (:mod:`flexcore.exchange.hardened`) import it without importing each other)."""
from __future__ import annotations

from dataclasses import dataclass

from flexcore.errors import FlexcosimError


class PackageError(FlexcosimError, ValueError):
    """A sensitivity package is malformed, tampered with, or of an unknown version."""


@dataclass(frozen=True)
class PointInfo:
    """One operating point as published: its label and, for the points at a fraction of
    every bid's volume, that fraction (the TSO checks the bids' volumes against it)."""

    label: str
    activation_fraction: float | None = None
