"""python -m bench [decide] [worker]: run the benchmarks and print their tables (default: decide)."""

from __future__ import annotations

import sys

from bench import decide, worker


def main(argv: list[str]) -> int:
    which = argv or ["decide"]
    if "decide" in which:
        decide.main()
    if "worker" in which:
        worker.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
