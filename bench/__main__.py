"""python -m bench [decide] : run the benchmarks and print their tables."""

from __future__ import annotations

import sys

from bench import decide


def main(argv: list[str]) -> int:
    which = argv or ["decide"]
    if "decide" in which:
        decide.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
