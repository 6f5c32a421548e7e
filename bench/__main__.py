"""python -m bench [decide] [worker] [ingress] [options]: run the benchmarks and print their tables (default:
decide). Options (`--quick`, `--leads N`, `--ledger N`, ...) go to the worker benchmark (bench/worker.py), or,
when only `ingress` is named, to the ingress benchmark (`--seconds S`, `--concurrency C`; bench/ingress.py)."""

from __future__ import annotations

import sys

from bench import decide, ingress, worker


def main(argv: list[str]) -> int:
    which = [a for a in argv if a in ("decide", "worker", "ingress")] or ["decide"]
    options = [a for a in argv if a not in ("decide", "worker", "ingress")]
    if which == ["ingress"]:
        ingress.main(options)
        return 0
    if options and "worker" not in which:
        raise SystemExit(f"options {options} are for the worker benchmark: python -m bench worker {' '.join(options)}")
    if "decide" in which:
        decide.main()
    if "worker" in which:
        worker.main(options)
    if "ingress" in which:
        ingress.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
