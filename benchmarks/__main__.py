"""``python -m benchmarks {quality,speed,report,checkpoints,restart,ggf,splitting,throughput,nfe} ...``"""
from __future__ import annotations

import argparse
import sys

from benchmarks.scripts import SCRIPTS


def build_parser() -> argparse.ArgumentParser:
    from benchmarks import quality_cli, speed

    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="fastdiff benchmarks; results go to benchmarks/results/, "
                                             "`report` assembles BENCHMARKS.md")
    sub = ap.add_subparsers(dest="command", required=True)
    quality_cli.add_arguments(sub.add_parser("quality", help="quality per NFE vs peers on oracle mixtures and nets"))
    speed.add_arguments(sub.add_parser("speed", help="sampler / training overheads as ratios, sample.py scaling"))
    from benchmarks import checkpoints

    checkpoints.add_arguments(sub.add_parser("checkpoints", help="train the benchmark's small networks when absent"))
    rep = sub.add_parser("report", help="assemble BENCHMARKS.md from benchmarks/results/*.md")
    rep.add_argument("--out", default=None, help="output file (default: BENCHMARKS.md at the repo root)")
    for name, path in SCRIPTS.items():
        sub.add_parser(name, help=f"run {path} (arguments passed through)", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCRIPTS:  # pass everything after the subcommand through untouched
        from benchmarks.scripts import run_script

        sys.exit(run_script(argv[0], argv[1:]))
    args = build_parser().parse_args(argv)
    if args.command == "quality":
        from benchmarks import quality_cli

        quality_cli.main(args)
    elif args.command == "speed":
        from benchmarks import speed

        speed.main(args)
    elif args.command == "checkpoints":
        from benchmarks import checkpoints

        sys.exit(checkpoints.main(args))
    elif args.command == "report":
        from benchmarks import report

        report.main(args)


if __name__ == "__main__":
    main()
