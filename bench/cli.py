"""``plantnotify bench``: the benchmarks of issue 7 against the real stack on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.scenarios import OPT_IN, ORDER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small N and short steps (< 2 minutes): a smoke run, not numbers to quote",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=ORDER + OPT_IN,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(ORDER)}; "
        f"only when named: {', '.join(OPT_IN)} (PLANTNOTIFY_BENCH_SOAK_MINUTES, default 30)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="directory for the JSON results, PNG plots and agent logs (default: bench/results)",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: the bench's libraries (rich, matplotlib, amqtt) are dev extras, and the
    # CLI builds every subcommand's parser on start-up.
    from bench.runner import run_bench

    names = args.scenario or ORDER
    report = run_bench(
        quick=args.quick, names=[n for n in ORDER + OPT_IN if n in names], out_dir=args.out
    )
    # A scenario that failed is an error; one whose part is not installed is only reported.
    return 0 if all(r.status != "error" for r in report.scenarios.values()) else 1
