"""The DSO's commands (``flexcosim dso linearize|validate|refine``): file glue over
:mod:`flexcore.dso`. Application code: it reads and writes the exchange files.

The private key map of a package folder ``PKG`` is ``PKG.keymap.json`` beside it (never
inside the folder that is sent to the TSO), and an existing key map is never overwritten
unless ``force``.
"""
from __future__ import annotations

from pathlib import Path

from flexcore.dso import KeyMap, KeyMapError, Linearizer, PointNotConverged
from flexcore.exchange.bids import read_bids
from flexcore.exchange.package import load_full_package, save_package


def _load_grid(path):
    from flexcore.grid.grids import load_grid

    return load_grid(path)


def keymap_path_for(package_dir) -> Path:
    """The default key map of a package folder: ``<folder>.keymap.json`` beside it."""
    p = Path(package_dir).resolve()
    return p.parent / f"{p.name}.keymap.json"


def _keymap_target(package_dir, keymap, *, force: bool) -> Path:
    """Where the key map of the package written to ``package_dir`` goes; KeyMapError for a
    path inside the package folder or an existing file (unless ``force``)."""
    path = Path(keymap) if keymap else keymap_path_for(package_dir)
    pkg = Path(package_dir).resolve()
    if pkg == path.resolve() or pkg in path.resolve().parents:
        raise KeyMapError(f"{path}: the private key map must not be inside the package folder "
                          f"{package_dir} (the folder is sent to the TSO)")
    if path.exists() and not force:
        raise KeyMapError(f"{path}: exists; refusing to overwrite a key map (it may belong to "
                          "another package; use --force)")
    return path


def linearize_cli(*, grid, bids, points, screen, out, keymap=None, force=False,
                  sign=None) -> str:
    net = _load_grid(grid)
    table = read_bids(bids, require_bus=True)
    keymap_path = _keymap_target(out, keymap, force=force)
    try:
        lin = Linearizer(net, table)
        rep = lin.linearize(points, screen_rows=screen)
    except PointNotConverged as exc:  # name the grid: the message alone does not
        raise PointNotConverged(f"{grid}: {exc}") from None
    out = Path(out)
    save_package(rep.package, out, signing_key=sign)
    lin.keymap.save(keymap_path, overwrite=force)
    signed = " (signed)" if sign else ""
    islands = ""
    if lin.isolated_buses:
        b = lin.isolated_buses
        islands = (f"\nisolated buses (cut off from every source, left out of the package): "
                   f"{len(b)}: {', '.join(map(str, b[:20]))}{' ...' if len(b) > 20 else ''}")
    return (rep.as_text() + islands + f"\npackage{signed}: {out}\nprivate key map (keep it): "
            f"{keymap_path}")


def _read_keymap(explicit, default: Path) -> KeyMap:
    return KeyMap.load(explicit if explicit else default)


def _clearing_keymap(clearing: Path) -> Path:
    """The one ``*.keymap.json`` next to the clearing (KeyMapError for none or several)."""
    found = sorted(clearing.resolve().parent.glob("*.keymap.json"))
    if len(found) != 1:
        raise KeyMapError(f"{clearing}: {len(found)} key maps (*.keymap.json) beside it "
                          f"{[f.name for f in found][:5]}; name one with --keymap")
    return found[0]


def validate_cli(*, grid, bids, clearing, keymap, out, trust=(),
                 require_signature=False) -> tuple[str, bool]:
    """Validate a clearing in an AC power flow; (report text, safe) — safe: converged and
    every AC limit kept (``flexcosim dso validate`` exits 1 otherwise). A clearing that
    activates an id that is not a bid, or a bid outside its bounds, is refused
    (:class:`~flexcore.exchange.clearing.ClearingError`, exit 2)."""
    from flexcore.market import read_clearing

    result = read_clearing(clearing, trust=trust, require_signature=require_signature)
    table = read_bids(bids, require_bus=True)
    result.check_activation(table.ids, table.lower_mw, table.upper_mw)
    km = KeyMap.load(keymap) if keymap else KeyMap.load(_clearing_keymap(Path(clearing)))
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    report = lin.validate(result)
    from flexcore.runs import write_json

    write_json(out, report.to_json())
    return report.as_text() + f"\nreport: {out}", report.safe


def refine_cli(*, grid, bids, package, clearing, keymap, out, sign=None, trust=(),
               require_signature=False, force=False) -> str:
    from flexcore.market import read_clearing

    pkg = load_full_package(package)
    result = read_clearing(clearing, trust=trust, require_signature=require_signature)
    table = read_bids(bids, require_bus=True)
    result.check_activation(table.ids, table.lower_mw, table.upper_mw)
    km = _read_keymap(keymap, keymap_path_for(package))
    dest = _keymap_target(out, None, force=force)
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    new = lin.refine(pkg, result)
    save_package(new, out, signing_key=sign)
    km.save(dest, overwrite=force)
    return f"package with {new.m} operating points: {out}\nprivate key map (keep it): {dest}"
