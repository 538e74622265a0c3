"""The DSO's commands (``flexcosim dso linearize|validate|refine``): file glue over
:mod:`flexcore.dso`. Application code: it reads and writes the exchange files."""
from __future__ import annotations

from pathlib import Path

from flexcore.dso import KeyMap, Linearizer, PointNotConverged
from flexcore.exchange.bids import read_bids
from flexcore.exchange.package import load_package, save_package


def _load_grid(path):
    from flexcore.grid.grids import load_grid

    return load_grid(path)


def linearize_cli(*, grid, bids, points, screen, out) -> str:
    net = _load_grid(grid)
    table = read_bids(bids, require_bus=True)
    try:
        lin = Linearizer(net, table)
        rep = lin.linearize(points, screen_rows=screen)
    except PointNotConverged as exc:  # name the grid: the message alone does not
        raise PointNotConverged(f"{grid}: {exc}") from None
    out = Path(out)
    save_package(rep.package, out)
    keymap_path = out.parent / "KEYMAP.json"
    lin.keymap.save(keymap_path)
    islands = ""
    if lin.isolated_buses:
        b = lin.isolated_buses
        islands = (f"\nisolated buses (cut off from every source, left out of the package): "
                   f"{len(b)}: {', '.join(map(str, b[:20]))}{' ...' if len(b) > 20 else ''}")
    return rep.as_text() + islands + f"\npackage: {out}\nprivate key map (keep it): {keymap_path}"


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
