"""Benchmark: reading a package's signed bytes at the TSO (``flexcosim-package-bytes``),
in memory (:func:`flexcore.exchange.wire.package_from_bytes`) against the former way
through a temporary folder (write the three members, then
:func:`flexcore.exchange.package.load_package` of the folder: the same checks), and
writing them (:func:`~flexcore.exchange.wire.package_to_bytes` against ``save_package``
into a temporary folder, then zip).

``python -m bench.bench_wire [--grid simbench:1-MVLV-semiurb-all-0-sw] [--areas 12]
[--repeat 20]``: the first ``areas`` LV areas of the region, split and linearised as in the
region co-simulation, each publishing its format-2 package of the first clearing round
(the exact publication, :class:`flexcore.region.publish.LazyPublication`), plus the MV
DSO's; every package is read ``repeat`` times each way, alternating old and new, in one
run. Writes ``results/benchmarks/wire.json`` (ms per package each way, their ratio, the
packages' sizes, the load average) and checks that both ways read the same arrays.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.exchange.package import ARRAYS, MANIFEST, SIGNATURE, load_package, save_package
from flexcore.exchange.wire import package_from_bytes, package_to_bytes
from flexcore.grid.grids import load_grid
from flexcore.region.publish import LazyPublication
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, setup_region
from flexcore.runs import write_json

OUT = Path("results/benchmarks/wire.json")


def read_via_folder(data: bytes, trusted: list, source: str):
    """The former reader: the archive's members into a temporary folder, then
    ``load_package`` of it (the archive checks before are the same both ways)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        parts = {i.filename: zf.read(i) for i in zf.infolist()}
    with tempfile.TemporaryDirectory(prefix="flexcosim-wire-") as tmp:
        folder = Path(tmp)
        for name, blob in parts.items():
            (folder / name).write_bytes(blob)
        return load_package(folder, trust=trusted, require_signature=True)


def write_via_folder(package, key) -> bytes:
    """The former writer: ``save_package`` into a temporary folder, then zip it."""
    with tempfile.TemporaryDirectory(prefix="flexcosim-wire-") as tmp:
        folder = save_package(package, Path(tmp) / "p", signing_key=key)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in (MANIFEST, ARRAYS, SIGNATURE):
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)),
                            (folder / name).read_bytes())
        return buf.getvalue()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    p.add_argument("--areas", type=int, default=12)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    region = split_region(load_grid(a.grid, allow_mvlv=True), source=a.grid)
    bids_all = region_bids(region, seed=0, share=(1.0, 3.0))
    names = [x.name for x in region.areas if x.name in bids_all][:a.areas]
    setup = setup_region(region, {n: bids_all[n] for n in names}, seed=0, secret=b"bench")
    total = float(sum(d.bids.volume_mw.sum() for d in setup.lv))
    pub = LazyPublication.start(setup, 0.3 * total, seed=0)
    sides = pub.lv + ([pub.mv] if pub.mv is not None else [])
    packages = [s.publish(rng=np.random.default_rng(k)) for k, s in enumerate(sides)]
    key = Ed25519PrivateKey.generate()
    trusted = [key.public_key()]
    blobs = [package_to_bytes(pkg, key) for pkg in packages]
    for pkg, data in zip(packages, blobs):  # both readers give the same package
        new = package_from_bytes(data, trusted=trusted)
        old = read_via_folder(data, trusted, "p")
        for name, arr in pkg.arrays().items():
            np.testing.assert_array_equal(new.arrays()[name], arr)
            np.testing.assert_array_equal(old.arrays()[name], arr)
    load0 = os.getloadavg()[0]
    t = {"read_old": 0.0, "read_new": 0.0, "write_old": 0.0, "write_new": 0.0}
    for _ in range(a.repeat):
        for pkg, data in zip(packages, blobs):
            t0 = time.perf_counter()
            read_via_folder(data, trusted, "p")
            t1 = time.perf_counter()
            package_from_bytes(data, trusted=trusted, source="p")
            t2 = time.perf_counter()
            write_via_folder(pkg, key)
            t3 = time.perf_counter()
            package_to_bytes(pkg, key)
            t4 = time.perf_counter()
            t["read_old"] += t1 - t0
            t["read_new"] += t2 - t1
            t["write_old"] += t3 - t2
            t["write_new"] += t4 - t3
    count = a.repeat * len(packages)
    ms = {k: 1e3 * v / count for k, v in t.items()}
    sizes = [len(b) for b in blobs]
    out = {"grid": a.grid, "packages": len(packages), "repeat": a.repeat,
           "bytes_min": min(sizes), "bytes_mean": float(np.mean(sizes)),
           "bytes_max": max(sizes),
           **{f"{k}_ms_per_package": v for k, v in ms.items()},
           "read_ratio_old_over_new": ms["read_old"] / ms["read_new"],
           "write_ratio_old_over_new": ms["write_old"] / ms["write_new"],
           "load_avg_before": load0, "load_avg_after": os.getloadavg()[0],
           "note": "one run, old and new alternating per package; 2 shared cores"}
    print(f"{len(packages)} packages ({out['bytes_mean'] / 1e3:.0f} kB mean): read "
          f"{ms['read_old']:.2f} ms via a folder, {ms['read_new']:.2f} ms in memory "
          f"(x{out['read_ratio_old_over_new']:.2f}); write {ms['write_old']:.2f} ms via a "
          f"folder, {ms['write_new']:.2f} ms in memory (x{out['write_ratio_old_over_new']:.2f});"
          f" load {load0:.1f}", flush=True)
    write_json(a.out, out)
    print(f"written {a.out}")
    return out


if __name__ == "__main__":
    main()
