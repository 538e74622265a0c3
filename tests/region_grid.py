"""A small hand-built MV+LV region for the region tests (not SimBench)."""
from __future__ import annotations

import re

import pandapower as pp


def small_region(*, n_lv: int = 3, lv_buses: int = 5):
    """20 kV feeder of ``n_lv + 1`` buses from an ext_grid, an MV/LV transformer (0.25 MVA)
    at each MV bus after the first, each feeding a 0.4 kV radial feeder of ``lv_buses``
    buses with one 20 kW load per bus; one MV load."""
    net = pp.create_empty_network(name="small MV+LV region")
    mv = [pp.create_bus(net, 20.0, name=f"mv{k}") for k in range(n_lv + 1)]
    pp.create_ext_grid(net, mv[0], vm_pu=1.02)
    for a, b in zip(mv[:-1], mv[1:]):
        pp.create_line(net, a, b, 2.0, "NA2XS2Y 1x95 RM/25 12/20 kV")
    pp.create_load(net, mv[1], p_mw=0.3, q_mvar=0.05, name="mv load")
    for k, hv in enumerate(mv[1:]):
        lv = [pp.create_bus(net, 0.4, name=f"lv{k}-{i}") for i in range(lv_buses)]
        pp.create_transformer(net, hv, lv[0], "0.25 MVA 20/0.4 kV")
        for a, b in zip(lv[:-1], lv[1:]):
            pp.create_line(net, a, b, 0.08 + 0.02 * k, "NAYY 4x150 SE")
        for i, b in enumerate(lv[1:]):
            pp.create_load(net, b, p_mw=0.02, q_mvar=0.005, name=f"load{k}-{i}")
    return net


def true_nesting(setup, *, min_size: int = 0) -> set[frozenset[str]]:
    """Independent oracle of how LV areas nest on MV feeders: per MV line of the whole
    region, the names of the areas (``d.name`` of ``setup.lv``) whose transformer hangs
    behind it (seen from the ext_grid), from pandapower's graph of the region; groups of at
    least ``min_size`` areas."""
    import networkx as nx
    import pandapower.topology as top

    net = setup.region.net
    g = top.create_nxgraph(net)
    src = int(net.ext_grid.bus.iloc[0])
    out = set()
    for a, b in zip(net.line.from_bus, net.line.to_bus):
        if net.bus.vn_kv[a] < 1:
            continue
        h = nx.Graph(g)
        h.remove_edge(a, b)
        far = b if nx.has_path(h, src, a) else a
        comp = nx.node_connected_component(h, far)
        group = frozenset(d.name for d in setup.lv if d.area.mv_bus in comp)
        if len(group) >= min_size:
            out.add(group)
    return out


_B64_FIELD = re.compile(r'"(signature|public_key)": "[A-Za-z0-9+/=]*"')
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S)


def without_crypto(text: str) -> str:
    """``text`` without the base64 of signatures and public keys (``SIGNATURE.json``, PEM
    files): random bytes whose fragments between ``+`` and ``/`` the name checks would read
    as words (a signature once held a bus name, ``A0``, that way)."""
    return _PEM.sub("", _B64_FIELD.sub(r'"\1": ""', text))
