"""The DSO's commands (``flexcosim dso linearize|validate|refine``): file glue over
:mod:`flexcore.dso`. Application code: it reads and writes the exchange files."""
from __future__ import annotations

from pathlib import Path

from flexcore.dso import KeyMap, Linearizer
from flexcore.exchange.bids import read_bids
from flexcore.exchange.package import load_package, save_package


def _load_grid(path):
    from flexcore.grid.grids import load_grid

    return load_grid(path)


def linearize_cli(*, grid, bids, points, screen, out, privacy="exact") -> str:
    """Linearise and publish: ``privacy`` "exact" (format 2, default), "envelope" or
    "full" (format 1, research)."""
    from flexcore.exchange.enums import PrivacyLevel

    level = PrivacyLevel.parse(privacy, where="--privacy")
    net = _load_grid(grid)
    table = read_bids(bids, require_bus=True)
    lin = Linearizer(net, table)
    rep = lin.linearize(points, screen_rows=screen)
    out = Path(out)
    published = rep.package
    note = ""
    if level == PrivacyLevel.EXACT:
        from flexcore.dso.privacy import harden

        b = table.subset(rep.package.columns)
        published, hkey = harden(rep.package, lower_mw=b.lower_mw, upper_mw=b.upper_mw)
        note = f"\nformat 2 (exact): {hkey.report}"
    elif level == PrivacyLevel.ENVELOPE:
        import importlib

        # flexcore.dso.envelope (the envelope engineer's module)
        envelope = importlib.import_module("flexcore.dso.envelope").envelope
        published = envelope(rep.package, lower_mw=table.subset(rep.package.columns).lower_mw,
                             upper_mw=table.subset(rep.package.columns).upper_mw)
        note = "\nformat 2 (envelope)"
    save_package(published, out)
    keymap_path = out.parent / "KEYMAP.json"
    lin.keymap.save(keymap_path)
    text = rep.as_text() + note + f"\npackage: {out}\nprivate key map (keep it): {keymap_path}"
    if level != PrivacyLevel.FULL:
        # the DSO's own format-1 package: predictions, validation and refinement use it
        private = out.parent / "PRIVATE-PACKAGE"
        save_package(rep.package, private)
        text += f"\nprivate format-1 package (keep it): {private}"
    return text


def _keymap_for(path_hint: Path, explicit) -> KeyMap:
    return KeyMap.load(explicit if explicit else path_hint)


def validate_cli(*, grid, bids, clearing, keymap, out) -> tuple[str, bool]:
    """Validate a clearing in an AC power flow; (report text, safe) — safe: converged and
    every AC limit kept (``flexcosim dso validate`` exits 1 otherwise)."""
    from flexcore.market import read_clearing

    result = read_clearing(clearing)
    km = _keymap_for(Path(clearing).parent / "KEYMAP.json", keymap)
    table = read_bids(bids, require_bus=True)
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    report = lin.validate(result)
    from flexcore.runs import write_json

    write_json(out, report.to_json())
    return report.as_text() + f"\nreport: {out}", report.safe


def refine_cli(*, grid, bids, package, clearing, keymap, out) -> str:
    from flexcore.market import read_clearing

    pkg = load_package(package)
    result = read_clearing(clearing)
    km = _keymap_for(Path(package).parent / "KEYMAP.json", keymap)
    table = read_bids(bids, require_bus=True)
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    new = lin.refine(pkg, result)
    save_package(new, out)
    dest = Path(out).parent / "KEYMAP.json"
    if not dest.exists():
        km.save(dest)
    return f"package with {new.m} operating points: {out}"
