"""``flexcosim`` command line. Heavy imports happen inside the commands, so ``--help`` is fast
(the parser imports only the choice lists: :class:`flexcore.exchange.enums.Objective` and
``flexcore.market.BACKENDS``).

Commands (public contracts between organisations; see README "Command line and files"):

- ``flexcosim grid build|info``           the DSO's grid model
- ``flexcosim dso linearize|validate|refine|audit``  DSO side: sensitivity package, AC
  validation, privacy audit
- ``flexcosim tso clear``                 TSO side: clears bids against a package
- ``flexcosim run SCENARIO.toml``         the mosaik co-simulation (``--check``: validate only)
- ``flexcosim sweep SWEEP.toml``          runs of a base scenario over parameter values (Dask)
- ``flexcosim region SCENARIO.toml``      a whole MV+LV region: one DSO per LV grid, the MV
  DSO, one clearing over all packages, the region's AC power flow (``scenarios/mvlv.toml``);
  ``--cosim --frames F --processes K``: as a mosaik co-simulation, DSOs in K processes
- ``flexcosim evaluate`` / ``flexcosim bench``  evaluation report and benchmarks
- ``flexcosim keygen --out KEY``          an Ed25519 key pair for signing exchange files

Exit codes, the same for every command (README "Exit codes"): 0 done; 1 the answer is "no"
(a clearing not optimal, an unsafe validation, a run that dispatched an unsafe frame); 2 bad
input (a :class:`flexcore.errors.FlexcosimError`, one line naming the culprit, or a usage
error from argparse); 3 internal error (any other exception, with its traceback: a bug);
130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from flexcore.errors import FlexcosimError
from flexcore.runs import limit_blas_threads

EXIT_OK = 0           #: done (``run``: the run completed; per-frame statuses are data)
EXIT_NO = 1           #: the answer is "no": not optimal, unsafe, an unsafe frame dispatched
EXIT_BAD_INPUT = 2    #: a FlexcosimError or a usage error: one line, no traceback
EXIT_INTERNAL = 3     #: any other exception: a bug, printed with its traceback
EXIT_INTERRUPTED = 130  #: Ctrl-C

def _points(text: str) -> list[float]:
    try:
        pts = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--points must be comma-separated numbers, got {text!r}") from None
    if not pts:
        raise argparse.ArgumentTypeError("--points needs at least one activation fraction")
    return pts


def _sign_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sign", metavar="KEY", help="sign the output with this private key "
                        "(flexcosim keygen)")


def _trust_flags(parser: argparse.ArgumentParser, sender: str) -> None:
    parser.add_argument("--trust", metavar="PUBKEY", action="append", default=[],
                        help=f"accept only input signed by this public key of the {sender} "
                        "(repeatable; implies --require-signature)")
    parser.add_argument("--require-signature", action="store_true",
                        help="refuse unsigned input")


def build_parser() -> argparse.ArgumentParser:
    from flexcore.exchange.enums import Objective
    from flexcore.market import BACKENDS

    p = argparse.ArgumentParser(prog="flexcosim", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="group", required=True)

    # ---------------------------------------------------------------- grid
    grid = sub.add_parser("grid", help="build or inspect the DSO's grid model")
    gsub = grid.add_subparsers(dest="cmd", required=True)
    b = gsub.add_parser("build", help="write the DSO's grid model as pandapower JSON")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--table", help="building table (CSV or GeoJSON); default: shipped Bergwald")
    src.add_argument("--simbench", metavar="CODE",
                     help="a SimBench LV code, e.g. 1-LV-rural3--0-no_sw")
    b.add_argument("--streets", help="street table CSV (street,x1_m,y1_m,x2_m,y2_m) for --table")
    b.add_argument("--substations", type=int, default=None, help="number of 630 kVA substations")
    b.add_argument("--out", required=True, help="GRID.json to write")
    i = gsub.add_parser("info", help="summary of a grid (one AC power flow) and a plot")
    i.add_argument("grid", help="GRID.json, 'bergwald' or 'simbench:CODE'")
    i.add_argument("--plot", help="PNG to write (default: a new folder under results/)")
    i.add_argument("--no-plot", action="store_true")

    # ---------------------------------------------------------------- dso
    dso = sub.add_parser("dso", help="DSO side: linearise, validate, refine")
    dsub = dso.add_subparsers(dest="cmd", required=True)
    lin = dsub.add_parser("linearize", help="publish a sensitivity package for a bid set")
    lin.add_argument("--grid", required=True)
    lin.add_argument("--bids", required=True,
                     help="BIDS.csv with id,bus,volume_mw,price_eur_per_mwh")
    lin.add_argument("--points", type=_points, default=[0.0, 0.5, 1.0],
                     help="activation fractions of the operating points (default 0,0.5,1)")
    lin.add_argument("--screen", action="store_true", help="drop rows that cannot reach a limit")
    lin.add_argument("--privacy", choices=("full", "exact", "envelope"), default="exact",
                     help="what the package reveals: 'exact' (default, package format 2: "
                          "only normalised rows that can bind, same optimum), 'envelope' "
                          "(per-bid activation ranges only) or 'full' (format 1, research)")
    lin.add_argument("--out", required=True,
                     help="package folder (the private key map is written beside it)")
    lin.add_argument("--keymap", help="private key map to write (default: OUT.keymap.json "
                     "beside the package folder; never inside it)")
    lin.add_argument("--force", action="store_true", help="overwrite an existing key map")
    _sign_flag(lin)
    val = dsub.add_parser("validate", help="apply a clearing in an AC power flow and compare")
    val.add_argument("--grid", required=True)
    val.add_argument("--bids", required=True)
    val.add_argument("--clearing", required=True)
    val.add_argument("--keymap", help="the package's key map (default: the one "
                     "*.keymap.json beside the clearing)")
    val.add_argument("--out", required=True, help="REPORT.json")
    _trust_flags(val, "TSO")
    ref = dsub.add_parser("refine", help="add the cleared activation as an operating point")
    ref.add_argument("--grid", required=True)
    ref.add_argument("--bids", required=True)
    ref.add_argument("--package", required=True)
    ref.add_argument("--clearing", required=True)
    ref.add_argument("--keymap", help="key map of --package (default: PACKAGE.keymap.json)")
    ref.add_argument("--out", required=True, help="new package folder (its key map is "
                     "written beside it as OUT.keymap.json)")
    ref.add_argument("--force", action="store_true", help="overwrite an existing key map")
    _sign_flag(ref)
    _trust_flags(ref, "TSO")
    aud = dsub.add_parser("audit", help="play the attacker on a package before publishing it")
    aud.add_argument("--package", required=True, help="package folder")
    aud.add_argument("--grid", required=True, help="GRID.json, 'bergwald' or 'simbench:CODE'")
    aud.add_argument("--keymap", help="key map of --package (default: PACKAGE.keymap.json)")
    aud.add_argument("--policy", help="POLICY.toml (max_<score> = limit); exit 1 when it fails")
    aud.add_argument("--json", dest="json_out", help="write the report as JSON")

    # ---------------------------------------------------------------- tso
    tso = sub.add_parser("tso", help="TSO side: clear balancing bids")
    tsub = tso.add_subparsers(dest="cmd", required=True)
    clr = tsub.add_parser("clear", help="clear bids against a sensitivity package (MILP)")
    clr.add_argument("--package", required=True)
    clr.add_argument("--bids", required=True)
    clr.add_argument("--request-mw", type=float, required=True)
    clr.add_argument("--objective", default=Objective.ABS_COST.value, choices=Objective.values())
    clr.add_argument("--backend", default=BACKENDS[0], choices=BACKENDS)
    clr.add_argument("--out", required=True, help="CLEARING.json")
    clr.add_argument("--allow-full-package", action="store_true",
                     help="accept a version-1 (full model) package: research only")
    _sign_flag(clr)
    _trust_flags(clr, "DSO")

    # ---------------------------------------------------------------- keygen
    kg = sub.add_parser("keygen", help="make an Ed25519 key pair: KEY (private, mode 0600) "
                        "and KEY.pub")
    kg.add_argument("--out", required=True, help="private key file to write (KEY.pub beside)")

    # ---------------------------------------------------------------- run / evaluate / bench
    run = sub.add_parser("run", help="run a co-simulation scenario")
    run.add_argument("scenario", help="scenario TOML, e.g. scenarios/bergwald.toml")
    run.add_argument("--day-types", help="comma-separated subset of day types")
    run.add_argument("--frames", help="frame indices within a day, e.g. 64-80 or 68,72")
    run.add_argument("--calendar", metavar="YEAR|START..END",
                     help="real dates instead of the representative days, e.g. 2025 or "
                          "2025-01-01..2025-02-01 (end exclusive; README 'Calendar runs')")
    run.add_argument("--chunks", type=int, metavar="K", default=None,
                     help="calendar runs: split the span into K consecutive chunks run in "
                          "parallel processes, merged into one run folder (default: "
                          "[calendar] chunks, 1; README 'Calendar runs')")
    run.add_argument("--warmup-days", type=int, metavar="W", default=None,
                     help="with --chunks: days run before each chunk but the first and "
                          "not kept (default: [calendar] warmup_days, 2)")
    run.add_argument("--out", help="run folder (default: a new folder under results/)")
    run.add_argument("--warmup-frames", type=int, metavar="N", default=None,
                     help="run N frames before the first slot of each day type without "
                          "recording them (default: [scenario] warmup_frames, 0)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--check", action="store_true",
                     help="only validate the scenario (TOML, grid, buildings, unit classes): "
                          "print 'ok' and exit 0, or one error line and exit 2")
    sw = sub.add_parser("sweep", help="run a base scenario over a grid of parameter values "
                        "(Dask; README 'Parameter sweeps')")
    sw.add_argument("sweep", nargs="?", help="SWEEP.toml ([sweep] base, mode; [vary])")
    sw.add_argument("--workers", type=int, default=1,
                    help="Dask LocalCluster worker processes (1 thread each; default 1; "
                         "0: run the points in this process, no Dask)")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                    help="join a running Dask cluster instead (workers need a shared file "
                         "system with this machine)")
    sw.add_argument("--resume", metavar="SWEEP_DIR",
                    help="continue a sweep folder: run only the points not finished there")
    sw.add_argument("--out", help="sweep folder (default: results/<time>-sweep-<name>/)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--check", action="store_true",
                    help="only validate the sweep file and its points: print 'ok' or exit 2")
    rg = sub.add_parser("region", help="a whole MV+LV region: many DSOs, one clearing")
    rg.add_argument("scenario", help="region TOML, e.g. scenarios/mvlv.toml")
    rg.add_argument("--out", help="run folder (default: a new folder under results/)")
    rg.add_argument("--areas", type=int, default=None,
                    help="only the first N LV areas (overrides the TOML)")
    rg.add_argument("--check", action="store_true",
                    help="only validate the TOML: print 'ok' and exit 0")
    rg.add_argument("--quiet", action="store_true")
    rg.add_argument("--cosim", action="store_true",
                    help="run as a mosaik co-simulation over frames, DSOs as processes")
    rg.add_argument("--frames", type=int, default=1, help="--cosim: frames to run")
    rg.add_argument("--processes", type=int, default=1,
                    help="--cosim: LV DSO processes (cmd starter)")
    rg.add_argument("--day-type", default=None,
                    help="--cosim: SimBench profiles of this day type (default: static loads)")
    rg.add_argument("--date", default=None, help="--cosim: SimBench profiles of this 2016 date")
    ev = sub.add_parser("evaluate", help="evaluation report (Table 1, Figures 5-8, over time)")
    ev.add_argument("--scenario", default=None)
    ev.add_argument("--out", default=None)
    ev.add_argument("--quick", action="store_true", help="reduced version (for tests)")
    be = sub.add_parser("bench", help="performance figures, written under results/benchmarks/")
    be.add_argument("--quick", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module doc). A usage error exits 2
    through argparse (``SystemExit``)."""
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    handler = {
        ("grid", "build"): _grid_build, ("grid", "info"): _grid_info,
        ("dso", "linearize"): _dso_linearize, ("dso", "validate"): _dso_validate,
        ("dso", "refine"): _dso_refine, ("dso", "audit"): _dso_audit,
        ("tso", "clear"): _tso_clear,
        ("run", None): _run, ("sweep", None): _sweep, ("evaluate", None): _evaluate,
        ("bench", None): _bench, ("region", None): _region,
        ("keygen", None): _keygen,
    }[(args.group, getattr(args, "cmd", None))]
    try:
        return int(handler(args))
    except FlexcosimError as exc:  # bad input: the message names the culprit
        print(f"flexcosim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("flexcosim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # anything else is a bug: never pass it off as bad input
        traceback.print_exc()
        print("flexcosim: internal error (a bug; the traceback above says where)",
              file=sys.stderr)
        return EXIT_INTERNAL


# --------------------------------------------------------------------------- grid
def _grid_build(args) -> int:
    import pandapower as pp

    from flexcore.grid import grids
    from flexcore.grid.gridgen import GridOptions

    opts = (GridOptions() if args.substations is None
            else GridOptions(n_substations=args.substations))
    if args.simbench:
        net = grids.load_simbench(args.simbench)
    elif args.table:
        net = grids.build_from_table(args.table, args.streets, options=opts)
    else:
        net = grids.build_bergwald(options=opts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pp.to_json(net, str(out))
    print(f"wrote {out}: {len(net.bus)} buses, {len(net.line)} lines, {len(net.trafo)} "
          f"transformer(s), {len(net.load)} building connections")
    return EXIT_OK


def _grid_info(args) -> int:
    from flexcore import runs
    from flexcore.district import buildings as district
    from flexcore.grid import grids
    from flexcore.study.plotting import plot_grid

    net = grids.load_grid(args.grid)
    table = district.load_building_table() if str(args.grid).lower() == grids.BERGWALD else None
    summary = grids.summarize(net, table=table, source=args.grid)
    print(summary.as_text())
    if not args.no_plot:
        path = Path(args.plot) if args.plot else runs.new_run_dir("grid") / "grid.png"
        plot_grid(net, path, title=f"{summary.name}: base case, line loading")
        print(f"plot: {path}")
    return EXIT_OK


# --------------------------------------------------------------------------- dso / tso
def _dso_linearize(args) -> int:
    from scenarios import dso_commands as dso

    report = dso.linearize_cli(grid=args.grid, bids=args.bids, points=args.points,
                               screen=args.screen, out=args.out, keymap=args.keymap,
                               force=args.force, sign=args.sign, privacy=args.privacy)
    print(report)
    return EXIT_OK


def _dso_validate(args) -> int:
    from scenarios import dso_commands as dso

    text, safe = dso.validate_cli(grid=args.grid, bids=args.bids, clearing=args.clearing,
                                  keymap=args.keymap, out=args.out, trust=args.trust,
                                  require_signature=args.require_signature)
    print(text)
    return EXIT_OK if safe else EXIT_NO


def _dso_refine(args) -> int:
    from scenarios import dso_commands as dso

    report = dso.refine_cli(grid=args.grid, bids=args.bids, package=args.package,
                            clearing=args.clearing, keymap=args.keymap, out=args.out,
                            sign=args.sign, trust=args.trust,
                            require_signature=args.require_signature, force=args.force)
    print(report)
    return EXIT_OK


def _dso_audit(args) -> int:
    from scenarios.dso_audit import audit_cli

    text, code = audit_cli(package=args.package, grid=args.grid, keymap=args.keymap,
                           policy=args.policy, json_out=args.json_out)
    print(text)
    return code


def _tso_clear(args) -> int:
    from flexcore.exchange.bids import read_bids
    from flexcore.exchange.package import check_bids, load_package
    from flexcore.market import clear, write_clearing

    package = load_package(args.package, allow_full=args.allow_full_package, trust=args.trust,
                           require_signature=args.require_signature)
    bids = read_bids(args.bids).without_bus()
    check_bids(package, bids)  # the bids the DSO linearised, not others
    result = clear(package, bids, args.request_mw, backend=args.backend, objective=args.objective)
    write_clearing(result, args.out, signing_key=args.sign)
    if result.status == "optimal":
        print(f"status optimal; delivered {result.delivered_mw:.4f} of {args.request_mw} MW; "
              f"cost {result.cost_eur_per_h:.2f} EUR/h; operating point "
              f"{result.operating_point_label}; wrote {args.out}")
        return EXIT_OK
    diag = result.diagnosis.message if result.diagnosis else result.message
    print(f"status {result.status}: {diag}; wrote {args.out}")
    return EXIT_NO


def _keygen(args) -> int:
    from flexcore.exchange.signing import generate_keypair, key_id, load_public_key

    priv, pub = generate_keypair(args.out)
    print(f"private key (keep it, mode 0600): {priv}\npublic key (hand it to the other "
          f"side): {pub}\nkey id {key_id(load_public_key(pub))}")
    return EXIT_OK


def _run(args) -> int:
    """0 when the run completed (per-frame statuses are data), 1 when it dispatched a frame
    the DSO found unsafe (only with ``dispatch_unsafe``)."""
    import logging

    from scenarios.runner import apply_overrides, check_scenario, load_config

    if args.check:
        cfg = _with_calendar(apply_overrides(load_config(args.scenario),
                                             day_types=args.day_types, frames=args.frames,
                                             warmup_frames=args.warmup_frames),
                             args.calendar, args)
        print(check_scenario(cfg))
        if _chunked(cfg):
            from scenarios.chunks import layout_text, plan_chunks

            print(layout_text(plan_chunks(cfg)))
        return EXIT_OK

    from scenarios.results import summary_text
    from scenarios.runner import run_scenario

    logging.getLogger("mosaik").setLevel(logging.WARNING)
    try:
        from loguru import logger
    except ImportError:  # mosaik without loguru: nothing to quieten
        pass
    else:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    cfg = _with_calendar(apply_overrides(load_config(args.scenario), day_types=args.day_types,
                                         frames=args.frames, warmup_frames=args.warmup_frames),
                         args.calendar, args)
    if _chunked(cfg):
        from scenarios.chunks import run_chunked

        run_dir, summary = run_chunked(cfg, out=args.out, quiet=args.quiet)
    else:
        run_dir, summary = run_scenario(cfg, out=args.out, quiet=args.quiet)
    print(summary_text(summary))
    print(f"run folder: {run_dir}")
    failed = [c for c in summary.get("chunk_layout", []) if c["status"] != "done"]
    for c in failed:
        print(f"chunk {c['chunk']} ({c['start'][:10]}..{c['end'][:10]}) failed: {c['error']}",
              file=sys.stderr)
    if failed:
        print(f"flexcosim: {len(failed)} chunk(s) failed; the folder holds the other chunks' "
              "frames (chunks.json)", file=sys.stderr)
        return EXIT_INTERNAL
    from scenarios.results import read_table

    frames = read_table(run_dir, "frames")
    dispatched_unsafe = (frames["status"] == "unsafe") & frames["dispatched"].isin([True, 1])
    unsafe = frames.loc[dispatched_unsafe, "frame"]
    if len(unsafe):
        print(f"dispatched {len(unsafe)} unsafe frame(s): {unsafe.tolist()[:10]}")
        return EXIT_NO
    return EXIT_OK


def _sweep(args) -> int:
    from scenarios.sweep import sweep_cli

    return sweep_cli(args)


def _with_calendar(cfg, text: str | None, args=None):
    """``run --calendar``: the scenario on real dates, ``--chunks``, ``--warmup-days``: in
    parallel chunks (README "Calendar runs")."""
    if text:
        from scenarios.config import with_calendar

        cfg = with_calendar(cfg, text)
    chunks, days = getattr(args, "chunks", None), getattr(args, "warmup_days", None)
    if chunks is None and days is None:
        return cfg
    from scenarios.chunks import with_chunks

    return with_chunks(cfg, chunks=chunks, warmup_days=days)


def _chunked(cfg) -> bool:
    return cfg.calendar is not None and cfg.calendar.chunks > 1


def _region(args) -> int:
    import dataclasses

    from scenarios.region import load_region_config, run_region_study

    cfg = load_region_config(args.scenario)
    if args.areas is not None:
        cfg = dataclasses.replace(cfg, areas=max(args.areas, 0))
    if args.check:
        print("ok")
        return EXIT_OK
    if args.cosim:
        from scenarios.config import ConfigError
        from scenarios.region_cosim import CosimOptions, run_region_cosim

        if args.frames < 1 or args.processes < 1:
            raise ConfigError("--frames and --processes must be >= 1")
        opts = CosimOptions(frames=args.frames, processes=args.processes,
                            day_type=args.day_type, date=args.date)
        res = run_region_cosim(cfg, opts, out=args.out, quiet=args.quiet)
        safe = all(r["dispatched"] and r["ac_violations"] == 0 for r in res.frames)
        return EXIT_OK if safe else EXIT_NO
    report, _ = run_region_study(cfg, out=args.out, quiet=args.quiet)
    return EXIT_OK if report.ac_safe else EXIT_NO


def _evaluate(args) -> int:
    from scenarios.evaluate import evaluate_cli

    return evaluate_cli(args)


def _bench(args) -> int:
    from bench.run_all import main as bench_main

    return bench_main(quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
