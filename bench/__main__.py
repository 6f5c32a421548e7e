"""python -m bench [decide] [worker] [worker options]: run the benchmarks and print their tables (default:
decide). Options (`--quick`, `--leads N`, `--ledger N`, ...) go to the worker benchmark (bench/worker.py)."""

from __future__ import annotations

import sys

from bench import decide, worker


def main(argv: list[str]) -> int:
    which = [a for a in argv if a in ("decide", "worker")] or ["decide"]
    options = [a for a in argv if a not in ("decide", "worker")]
    if options and "worker" not in which:
        raise SystemExit(f"options {options} are for the worker benchmark: python -m bench worker {' '.join(options)}")
    if "decide" in which:
        decide.main()
    if "worker" in which:
        worker.main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
