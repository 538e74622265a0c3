"""Results of a clearing and the ``CLEARING.json`` file (format ``flexcosim-clearing`` v2).

``CLEARING.json`` holds one JSON object:

``format``, ``version``
    ``"flexcosim-clearing"``, ``2`` (version 1 files are still read: see below).
``status``
    a :class:`~flexcore.exchange.enums.ClearingStatus`: ``"optimal"``, ``"infeasible"``,
    ``"time_limit"`` (a feasible, not proven optimal solution) or ``"error"``; ``message``
    explains.
``request_mw``, ``delivered_mw``, ``cost_eur_per_h``, ``objective``
    requested and delivered balancing power (MW), cost rate of the activation while it
    lasts (``sum_j c_j |x_j|``, EUR/h), solver objective value.
``operating_point``, ``operating_point_label``
    index and label of the selected operating point (Voronoi region), ``null`` if none.
``activation_mw``
    ``{bid_id: MW}`` signed activation of every bid (0 for bids not activated).
``predicted_vm_pu``, ``predicted_loading_percent``
    ``{row_key: value}`` linear estimates ``V_i* + VTDF_i* dP_i*`` and
    ``L_i* + LTDF_i* dP_i*`` for every row of the package.
``backend``, ``method``, ``objective_name``, ``build_time_s``, ``solve_time_s``
    how it was solved.
``diagnosis``
    ``null`` or an object (see :class:`Diagnosis`), set when the request is infeasible.

The file is strict JSON (duplicate keys, NaN and Infinity are refused). A signed clearing
has a detached signature record ``CLEARING.json.sig`` beside it (see
:mod:`flexcore.exchange.signing`, purpose ``"flexcosim-clearing"``) over the SHA-256 of the
canonical JSON of the object (sorted keys, no whitespace), so re-indenting the file keeps
the signature valid and any change of a value breaks it.

Version 1 is version 2 with the cost rate under the key ``cost_eur`` (also EUR/h); it is
read into ``cost_eur_per_h``. Each version must use its own key: a version-2 file with
``cost_eur`` (or a version-1 file with ``cost_eur_per_h``) is refused.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.errors import FlexcosimError
from flexcore.exchange.enums import ClearingStatus
from flexcore.exchange.limits import FloatArray
from flexcore.exchange.signing import (
    StrictJSONError,
    TrustSpec,
    canonical_json,
    check_signature_file,
    loads_strict,
    sha256_hex,
    sign_digest,
    write_record,
)

FORMAT = "flexcosim-clearing"
VERSION = 2
#: the key of the cost rate (EUR/h) in each version this reader knows
COST_KEY = {1: "cost_eur", 2: "cost_eur_per_h"}


class ClearingError(FlexcosimError, ValueError):
    """Bad input to the clearing (e.g. bids not matching the package columns)."""


class ClearingFileError(FlexcosimError, ValueError):
    """A ``CLEARING.json`` file is malformed, tampered with, or of an unknown version."""


@dataclass
class Diagnosis:
    """Why a request cannot be served, from auxiliary problems without the balance row.

    ``max_deliverable_mw`` / ``min_deliverable_mw``: largest / smallest total activation
    the bids can deliver within all limits (over all regions); ``None`` if no region is
    feasible even without a balance requirement. ``region_ranges`` gives
    ``[label, min, max]`` per region (``min``/``max`` ``None`` for an infeasible region).
    ``binding_rows``: voltage/loading row keys at their limit in the solution reaching the
    extreme in the request's direction. ``base_violated_rows``: ``{point label: [row
    keys]}`` whose base value already violates a limit (activation must repair them).
    """

    message: str
    max_deliverable_mw: float | None = None
    min_deliverable_mw: float | None = None
    binding_rows: list[str] = field(default_factory=list)
    base_violated_rows: dict[str, list[str]] = field(default_factory=dict)
    region_ranges: list[list[Any]] = field(default_factory=list)


@dataclass
class ClearingResult:
    """Outcome of :func:`flexcore.market.clear`; ``status`` may be given as its string."""

    status: ClearingStatus
    request_mw: float
    message: str = ""
    delivered_mw: float | None = None
    cost_eur_per_h: float | None = None  # sum_j c_j |x_j| while the activation lasts
    objective: float | None = None
    operating_point: int | None = None
    operating_point_label: str | None = None
    activation_mw: dict[str, float] = field(default_factory=dict)
    predicted_vm_pu: dict[str, float] = field(default_factory=dict)
    predicted_loading_percent: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    method: str = ""
    objective_name: str = ""
    build_time_s: float = 0.0
    solve_time_s: float = 0.0
    diagnosis: Diagnosis | None = None

    def __post_init__(self) -> None:
        try:
            self.status = ClearingStatus.parse(self.status, where="ClearingResult.status")
        except FlexcosimError as exc:
            raise ClearingError(str(exc)) from None

    @property
    def ok(self) -> bool:
        """True when a dispatchable solution exists (optimal or time-limited incumbent)."""
        return self.status.has_solution and self.operating_point is not None

    def activation_vector(self, columns: Sequence[str]) -> FloatArray:
        """The activation in the order of ``columns`` (MW; 0 for a column not activated).
        An activation under an id that is not one of ``columns`` raises ClearingError."""
        unknown = sorted(set(self.activation_mw) - set(columns))
        if unknown:
            raise ClearingError(f"clearing activates bid id(s) that are not columns of the "
                                f"package: {unknown[:5]}")
        n = len(columns)
        return np.fromiter(map(self.activation_mw.get, columns, itertools.repeat(0.0, n)),
                           float, n)

    def check_activation(self, ids: Sequence[str], lower_mw: npt.ArrayLike,
                         upper_mw: npt.ArrayLike, *, tol_mw: float = 1e-9) -> FloatArray:
        """The activation in the order of ``ids``; ClearingError naming the bid for an id
        that is not a bid or an activation outside ``[lower_mw, upper_mw]`` (+- tol_mw)."""
        unknown = sorted(set(self.activation_mw) - set(ids))
        if unknown:
            lost = sum(abs(self.activation_mw[u]) for u in unknown)
            raise ClearingError(f"the clearing activates unknown bid id(s) {unknown[:5]} "
                                f"({lost:.6g} MW): not bids of this bid table")
        x = self.activation_vector(ids)
        lo, hi = np.asarray(lower_mw, float), np.asarray(upper_mw, float)
        bad = np.flatnonzero(~np.isfinite(x) | (x < lo - tol_mw) | (x > hi + tol_mw))
        if bad.size:
            j = int(bad[0])
            raise ClearingError(f"the clearing activates bid {ids[j]!r} with {x[j]} MW, outside "
                                f"its bounds [{lo[j]}, {hi[j]}] MW")
        return x

    def to_json_dict(self) -> dict[str, Any]:
        """The ``CLEARING.json`` object."""
        # as dataclasses.asdict would give it, without its deep copy of every number (the
        # maps hold one float per bid or row: copies of the dicts are enough)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("activation_mw", "predicted_vm_pu", "predicted_loading_percent"):
            d[key] = dict(d[key])
        d["status"] = self.status.value  # a plain str, as in every file
        d["diagnosis"] = None if self.diagnosis is None else asdict(self.diagnosis)
        return {"format": FORMAT, "version": VERSION, **d}


def signature_path(path: str | Path) -> Path:
    """The detached signature of a clearing file: ``CLEARING.json`` -> ``CLEARING.json.sig``."""
    path = Path(path)
    return path.with_name(path.name + ".sig")


def write_clearing(result: ClearingResult, path: str | Path, *,
                   signing_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None
                   ) -> Path:
    """Write ``result`` as ``CLEARING.json`` (parent directories are created) and, with a
    signing key, its signature ``CLEARING.json.sig`` (a stale one is removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = result.to_json_dict()
    path.write_text(json.dumps(d, indent=1, allow_nan=False))
    sig = signature_path(path)
    if signing_key is not None:
        write_record(sign_digest(sha256_hex(canonical_json(d)), signing_key, purpose=FORMAT),
                     sig)
    elif sig.exists():
        sig.unlink()
    return path


# --------------------------------------------------------------------------- reading
def _num(src: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClearingFileError(f"{src}: field '{name}' must be a finite number, got {value!r}")
    return float(value)


def _opt_num(src: str, name: str, value: Any) -> float | None:
    return None if value is None else _num(src, name, value)


def _str(src: str, name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ClearingFileError(f"{src}: field '{name}' must be a string, got {value!r}")
    return value


def _num_map(src: str, name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ClearingFileError(f"{src}: field '{name}' must be an object {{key: number}}")
    # the common case at once (str keys, finite floats: the same dict as below); any
    # other value goes through _num, which names the first bad one
    if all(type(v) is float for v in value.values()) and all(type(k) is str for k in value):
        if np.isfinite(np.fromiter(value.values(), float, len(value))).all():
            return dict(value)
    return {str(k): _num(src, f"{name}.{k}", v) for k, v in value.items()}


def _diagnosis(src: str, d: Any) -> Diagnosis | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ClearingFileError(f"{src}: field 'diagnosis' must be an object or null")
    try:
        binding = [str(k) for k in d.get("binding_rows", [])]
        base = {str(k): [str(r) for r in v] for k, v in d.get("base_violated_rows", {}).items()}
        ranges = [list(r) for r in d.get("region_ranges", [])]
    except (TypeError, AttributeError) as exc:
        raise ClearingFileError(f"{src}: field 'diagnosis' is malformed ({exc})") from None
    return Diagnosis(
        message=_str(src, "diagnosis.message", d.get("message", "")) or "",
        max_deliverable_mw=_opt_num(src, "diagnosis.max_deliverable_mw",
                                    d.get("max_deliverable_mw")),
        min_deliverable_mw=_opt_num(src, "diagnosis.min_deliverable_mw",
                                    d.get("min_deliverable_mw")),
        binding_rows=binding, base_violated_rows=base, region_ranges=ranges,
    )


def read_clearing(path: str | Path, *, trust: Iterable[TrustSpec] = (),
                  require_signature: bool = False) -> ClearingResult:
    """Read and validate ``CLEARING.json``; problems raise ClearingFileError naming the field.
    A signature ``CLEARING.json.sig`` is checked when present; with ``trust`` (the TSO's
    public keys) it must exist and be by one of them; ``require_signature`` makes it
    mandatory (raises :class:`~flexcore.exchange.signing.SignatureError`)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ClearingFileError(f"clearing file not found: {path}")
    try:
        d = loads_strict(path.read_bytes(), source=src)
    except StrictJSONError as exc:
        raise ClearingFileError(str(exc)) from None
    if isinstance(d, dict):
        check_signature_file(signature_path(path), sha256_hex(canonical_json(d)),
                             purpose=FORMAT, trust=trust,
                             require_signature=require_signature, what=f"clearing {path}")
    return clearing_from_json_dict(d, source=src)


def clearing_from_json_dict(d: Any, *, source: str = "clearing") -> ClearingResult:
    """A ClearingResult from the ``CLEARING.json`` object ``d`` (e.g. a message's wire
    form), validated as :func:`read_clearing` does; ``source`` names it in errors."""
    src = source
    if not isinstance(d, dict):
        raise ClearingFileError(f"{src}: top level must be a JSON object")
    if d.get("format") != FORMAT:
        raise ClearingFileError(f"{src}: field 'format' is not {FORMAT!r}")
    version = d.get("version")
    if isinstance(version, bool) or version not in COST_KEY:
        raise ClearingFileError(f"{src}: field 'version' is {version!r}, this reader knows "
                                f"{', '.join(map(str, COST_KEY))}")
    cost_key = COST_KEY[version]
    for other in set(COST_KEY.values()) - {cost_key}:
        if other in d:
            raise ClearingFileError(f"{src}: field '{other}' is not a field of version "
                                    f"{version} (its cost rate is '{cost_key}', EUR/h)")
    for key in ("status", "request_mw", "delivered_mw", cost_key, "operating_point",
                "operating_point_label", "activation_mw", "predicted_vm_pu",
                "predicted_loading_percent", "backend", "build_time_s", "solve_time_s",
                "diagnosis"):
        if key not in d:
            raise ClearingFileError(f"{src}: missing field '{key}'")
    try:
        status = ClearingStatus.parse(d["status"], where=f"{src}: field 'status'")
    except FlexcosimError as exc:
        raise ClearingFileError(str(exc)) from None
    op = d["operating_point"]
    if op is not None and (isinstance(op, bool) or not isinstance(op, int) or op < 0):
        raise ClearingFileError(f"{src}: field 'operating_point' must be an index >= 0 or null")
    res = ClearingResult(
        status=status,
        request_mw=_num(src, "request_mw", d["request_mw"]),
        message=_str(src, "message", d.get("message", "")) or "",
        delivered_mw=_opt_num(src, "delivered_mw", d["delivered_mw"]),
        cost_eur_per_h=_opt_num(src, cost_key, d[cost_key]),
        objective=_opt_num(src, "objective", d.get("objective")),
        operating_point=op,
        operating_point_label=_str(src, "operating_point_label", d["operating_point_label"],
                                   optional=True),
        activation_mw=_num_map(src, "activation_mw", d["activation_mw"]),
        predicted_vm_pu=_num_map(src, "predicted_vm_pu", d["predicted_vm_pu"]),
        predicted_loading_percent=_num_map(src, "predicted_loading_percent",
                                           d["predicted_loading_percent"]),
        backend=_str(src, "backend", d["backend"]) or "",
        method=_str(src, "method", d.get("method", "")) or "",
        objective_name=_str(src, "objective_name", d.get("objective_name", "")) or "",
        build_time_s=_num(src, "build_time_s", d["build_time_s"]),
        solve_time_s=_num(src, "solve_time_s", d["solve_time_s"]),
        diagnosis=_diagnosis(src, d["diagnosis"]),
    )
    if res.ok:
        if res.delivered_mw is None or not res.activation_mw:
            raise ClearingFileError(
                f"{src}: status {status!r} needs 'delivered_mw' and 'activation_mw'")
        total = sum(res.activation_mw.values())
        if abs(total - res.delivered_mw) > 1e-6 * max(1.0, abs(res.delivered_mw)):
            raise ClearingFileError(
                f"{src}: field 'delivered_mw' ({res.delivered_mw}) does not equal the sum of "
                f"'activation_mw' ({total}): the file was modified")
    return res
