"""``flexcosim dso audit``: the DSO plays the attacker on a package before publishing it.

File glue over :func:`flexcore.dso.audit.audit`; the CLI calls :func:`audit_cli` and exits
with its code (1 when a policy is given and fails).
"""
from __future__ import annotations

import json
from pathlib import Path

from flexcore.dso.audit import audit
from flexcore.dso.linearizer import KeyMap
from flexcore.errors import InputFileError
from flexcore.grid.grids import load_grid


def audit_cli(*, package, grid, keymap=None, policy=None, json_out=None,
              salt_guesses=()) -> tuple[str, int]:
    """Audit the package folder ``package`` against ``grid`` (name or JSON path) and the key
    map (default: ``<package>.keymap.json`` next to the package folder, as ``dso linearize``
    writes it). Returns (text, exit code)."""
    package = Path(package)
    km_path = Path(keymap) if keymap else package.parent / f"{package.name}.keymap.json"
    if not km_path.is_file():
        raise InputFileError(f"key map not found: {km_path} (give --keymap)")
    km = KeyMap.load(km_path)
    report = audit(package, net=load_grid(grid), keymap=km, salt_guesses=tuple(salt_guesses),
                   policy=policy)
    text = report.as_text()
    if json_out:
        out = Path(json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.as_dict(), indent=1))
        text += f"\nJSON report: {out}"
    return text, 0 if report.passed else 1
