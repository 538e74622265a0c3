"""What crosses between the DSO and the TSO agent in one frame, as typed messages.

Sequence per frame: TSO -> :class:`RequestMessage` (the frame's request, announced first)
-> DSO -> :class:`PackageMessage` (round 0) -> TSO -> :class:`ClearingMessage` -> DSO ->
either a :class:`PackageMessage` (the same round with more rows, or round k+1) or the final
:class:`VerdictMessage` -> TSO (which dispatches only if ``dispatch``). A frame without a
request whose base case is inside every limit gets no package: the DSO answers the request
with the verdict at once (``published=False``; nothing is cleared or activated).

``to_wire()`` gives a plain JSON-able dict (mosaik's ``cmd`` starter sends JSON) with a
``kind`` key, and :func:`from_wire` reads one back. A package crosses as a folder path
(file exchange, required between processes) or, in one process, as the
:class:`~flexcore.exchange.package.SensitivityPackage` object inside the wire dict (memory
exchange). A clearing crosses in its ``CLEARING.json`` form.

Layer contract: this module imports neither pandapower nor flexcore.grid, flexcore.dso or
flexcore.district.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexcore.errors import FlexcosimError
from flexcore.exchange.clearing import ClearingResult, clearing_from_json_dict
from flexcore.exchange.enums import FrameVerdict
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.package import SensitivityPackage, load_package


class MessageError(FlexcosimError, ValueError):
    """A wire dict that is no DSO/TSO message (unknown kind, missing or bad field)."""


def _int(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"message field '{key}' must be an integer, got {value!r}")
    return value


#: version of the request message (wire field ``version``); readers refuse other versions
REQUEST_VERSION = 1


@dataclass(frozen=True)
class RequestMessage:
    """TSO -> DSO: the balancing request of ``frame`` (MW, > 0 up), sent before the DSO
    publishes anything for the frame."""

    frame: int
    request_mw: float
    version: int = REQUEST_VERSION

    def __post_init__(self) -> None:
        if self.version != REQUEST_VERSION:
            raise MessageError(f"request message version {self.version!r}; this reader knows "
                               f"version {REQUEST_VERSION}")
        r = self.request_mw
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise MessageError(f"message field 'request_mw' must be a finite number, got {r!r}")

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "request", "version": self.version, "frame": self.frame, "round": 0,
                "request_mw": float(self.request_mw)}


@dataclass(frozen=True)
class PackageMessage:
    """DSO -> TSO: the package of round ``round`` (the object or a folder path)."""

    frame: int
    round: int
    package: SensitivityPackage | HardenedPackage | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.package is None) == (self.path is None):
            raise MessageError("a package message carries either the package or its path")

    def load(self) -> SensitivityPackage | HardenedPackage:
        """The package (read and checked from the folder when sent as a path)."""
        if self.package is not None:
            return self.package
        assert self.path is not None
        # the run's own exchange folder: whatever the scenario's [dso] privacy publishes
        return load_package(Path(self.path), allow_full=True)

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "package", "frame": self.frame, "round": self.round}
        if self.package is not None:
            d["package"] = self.package  # in-process only (memory exchange)
        else:
            d["path"] = self.path
        return d


@dataclass(frozen=True)
class ClearingMessage:
    """TSO -> DSO: the clearing of round ``round``."""

    frame: int
    round: int
    clearing: ClearingResult

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "clearing", "frame": self.frame, "round": self.round,
                "clearing": self.clearing.to_json_dict()}


@dataclass(frozen=True)
class VerdictMessage:
    """DSO -> TSO: the final word on the frame; the TSO dispatches only if ``dispatch``."""

    frame: int
    round: int
    verdict: FrameVerdict
    safe: bool
    dispatch: bool
    message: str = ""
    #: False: the DSO published nothing in this frame (no request, base case inside every
    #: limit); the TSO cleared nothing and activates nothing (wire field optional: True)
    published: bool = True

    def to_wire(self) -> dict[str, Any]:
        d = {"kind": "verdict", "frame": self.frame, "round": self.round,
             "verdict": str(self.verdict), "safe": self.safe, "dispatch": self.dispatch,
             "message": self.message}
        return d if self.published else d | {"published": False}


Message = RequestMessage | PackageMessage | ClearingMessage | VerdictMessage


def from_wire(d: dict[str, Any]) -> Message:
    """The message of a wire dict; MessageError names what is wrong."""
    if not isinstance(d, dict):
        raise MessageError(f"a message must be a dict, got {type(d).__name__}")
    kind = d.get("kind")
    frame, round_ = _int(d, "frame"), _int(d, "round")
    if kind == "request":
        return RequestMessage(frame, d.get("request_mw"),  # type: ignore[arg-type]
                              version=_int(d, "version"))
    if kind == "package":
        pkg = d.get("package")
        if pkg is not None and not isinstance(pkg, (SensitivityPackage, HardenedPackage)):
            raise MessageError("message field 'package' is not a SensitivityPackage or "
                               "HardenedPackage")
        path = d.get("path")
        if path is not None and not isinstance(path, str):
            raise MessageError("message field 'path' must be a string")
        return PackageMessage(frame, round_, package=pkg, path=path)
    if kind == "clearing":
        raw = d.get("clearing")
        if not isinstance(raw, dict):
            raise MessageError("message field 'clearing' must be a CLEARING.json object")
        return ClearingMessage(frame, round_, clearing_from_json_dict(raw, source="message"))
    if kind == "verdict":
        for key in ("safe", "dispatch"):
            if not isinstance(d.get(key), bool):
                raise MessageError(f"message field '{key}' must be true or false")
        message = d.get("message", "")
        if not isinstance(message, str):
            raise MessageError("message field 'message' must be a string")
        published = d.get("published", True)
        if not isinstance(published, bool):
            raise MessageError("message field 'published' must be true or false")
        return VerdictMessage(frame, round_, FrameVerdict.parse(d.get("verdict"),
                                                                where="message 'verdict'"),
                              safe=bool(d["safe"]), dispatch=bool(d["dispatch"]),
                              message=message, published=published)
    raise MessageError(f"unknown message kind {kind!r}; expected request, package, clearing "
                       "or verdict")
