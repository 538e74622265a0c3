"""``setup`` functions of the bad-input cases: inputs too large (or too tedious) to commit.

A case's ``setup = "module:function"`` (or a list of them) is called as
``function(case=<case folder>, tmp=<the case's fresh temp folder>)`` before the command runs;
it writes its files into ``tmp`` (the command reaches them as ``{tmp}/...``).
"""
from __future__ import annotations

from pathlib import Path

BIDS_HEADER = "id,bus,volume_mw,price_eur_per_mwh\n"


def small_grid():
    """A 20/0.4 kV feeder: external grid, one 0.4 MVA transformer, four LV buses in a line,
    a 10 kW load at each. Small enough to linearise in milliseconds."""
    import pandapower as pp

    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=20.0, name="mv")
    lv = [pp.create_bus(net, vn_kv=0.4, name=f"lv{k}") for k in range(5)]
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    pp.create_transformer(net, mv, lv[0], std_type="0.4 MVA 20/0.4 kV")
    for a, b in zip(lv, lv[1:]):
        pp.create_line(net, a, b, length_km=0.1, std_type="NAYY 4x150 SE")
    for k, bus in enumerate(lv[1:], start=1):
        pp.create_load(net, bus, p_mw=0.01, q_mvar=0.002, name=f"b{k}")
    return net


def write_small_grid(*, case: Path, tmp: Path) -> None:
    """``{tmp}/grid.json``: :func:`small_grid`."""
    import pandapower as pp

    pp.to_json(small_grid(), str(tmp / "grid.json"))


def write_small_package(*, case: Path, tmp: Path) -> None:
    """``{tmp}/grid.json``, ``{tmp}/bids_ok.csv`` (bids a, b, c) and the package ``{tmp}/pkg``
    of those bids at points 0, 0.5, 1: a valid TSO-side input for ``tso clear`` cases."""
    from flexcore.dso import Linearizer
    from flexcore.exchange.bids import read_bids
    from flexcore.exchange.package import save_package

    net = small_grid()
    bids = tmp / "bids_ok.csv"
    bids.write_text(BIDS_HEADER + "a,2,0.02,30\nb,3,0.03,40\nc,4,-0.02,50\n")
    from flexcore.dso.privacy import harden

    table = read_bids(bids, require_bus=True)
    lin = Linearizer(net, table)
    full = lin.linearize([0.0, 0.5, 1.0]).package
    box = table.subset(full.columns)
    # what the TSO receives by default: package format 2
    save_package(harden(full, lower_mw=box.lower_mw, upper_mw=box.upper_mw)[0], tmp / "pkg")
    write_small_grid(case=case, tmp=tmp)


def write_100k_bids(*, case: Path, tmp: Path) -> None:
    """``{tmp}/bids_100k.csv``: 100,000 valid 1 kW bids on bus 2 (five times the cap)."""
    rows = "".join(f"x{k},2,0.001,{10 + k % 90}\n" for k in range(100_000))
    (tmp / "bids_100k.csv").write_text(BIDS_HEADER + rows)
