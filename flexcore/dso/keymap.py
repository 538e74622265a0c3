"""The DSO's private key map (``KEYMAP.json``): opaque package keys -> buses and branches.

It never leaves the DSO: the TSO sees only the salted, sorted keys of the package.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexcore.errors import FlexcosimError
from flexcore.exchange.bids import BidTable

KEYMAP_FORMAT = "flexcosim-keymap"


class KeyMapError(FlexcosimError, ValueError):
    """A malformed ``KEYMAP.json`` or a key map that does not fit the grid or the bids."""


@dataclass(frozen=True)
class KeyMap:
    """Private map from the package's opaque keys to the DSO's grid (``KEYMAP.json``)."""

    columns: dict[str, int]  # bid id -> bus
    vm_pu: dict[str, int]  # row key -> bus
    loading_percent: dict[str, tuple[str, int]]  # row key -> (element, index)
    salt: str = ""

    @classmethod
    def create(cls, bids: BidTable, *, buses, branches, salt: str | None = None) -> KeyMap:
        """Keys are salted hashes, sorted, so neither names nor order reveal the topology.
        ``buses`` and ``branches`` ((element, index) pairs) are the monitored rows."""
        salt = secrets.token_hex(8) if salt is None else str(salt)

        def key(prefix: str, text: str) -> str:
            return prefix + hashlib.sha256(f"{salt}|{text}".encode()).hexdigest()[:10]

        vm_keys = {key("v", f"bus:{b}"): int(b) for b in buses}
        ld_keys = {key("l", f"{e}:{i}"): (e, int(i)) for e, i in branches}
        return cls(columns={b: int(bus) for b, bus in zip(bids.ids, bids.bus)},
                   vm_pu=dict(sorted(vm_keys.items())),
                   loading_percent=dict(sorted(ld_keys.items())), salt=salt)

    def to_json(self) -> dict[str, Any]:
        return {"format": KEYMAP_FORMAT, "version": 1, "salt": self.salt,
                "columns": self.columns, "vm_pu": self.vm_pu,
                "loading_percent": {k: list(v) for k, v in self.loading_percent.items()}}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the key map (mode 0600: it is private); an existing file raises
        :class:`KeyMapError` unless ``overwrite`` (it may belong to another package)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyMapError(f"{path}: exists; refusing to overwrite a key map (it may "
                              "belong to another package; use --force / overwrite=True)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KeyMap:
        """Read ``KEYMAP.json``; a missing file raises FileNotFoundError, a malformed one
        :class:`KeyMapError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"key map not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KeyMapError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != KEYMAP_FORMAT:
            raise KeyMapError(f"{path}: not a flexcosim key map")
        try:
            return cls(columns={k: int(v) for k, v in data["columns"].items()},
                       vm_pu={k: int(v) for k, v in data["vm_pu"].items()},
                       loading_percent={k: (str(v[0]), int(v[1]))
                                        for k, v in data["loading_percent"].items()},
                       salt=str(data.get("salt", "")))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise KeyMapError(f"{path}: malformed key map ({exc!r})") from None

    def check(self, bids: BidTable, *, buses, branches) -> None:
        """KeyMapError unless the columns are ``bids``' ids (same order) and the rows are
        exactly ``buses`` and ``branches``."""
        if list(self.columns) != list(bids.ids):
            raise KeyMapError("the key map's columns do not match the bid ids (same bids, same "
                              "order, are needed for a refinement of the same package)")
        if set(self.vm_pu.values()) != {int(b) for b in buses} or \
                set(self.loading_percent.values()) != set(branches):
            raise KeyMapError("the key map does not describe this grid's buses and branches")
