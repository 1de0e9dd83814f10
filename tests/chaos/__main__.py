"""``python -m tests.chaos [--seconds 600] [--seed N] [--report PATH] [--tmp DIR]``: exit 0 when
every invariant holds, 1 otherwise (see tests/chaos/__init__.py)."""

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long load and faults run (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run's fault sequence (default: random)")
    parser.add_argument("--report", type=Path, default=None, help="also write the markdown report here")
    parser.add_argument("--tmp", type=Path, default=None, help="where servers keep data and logs (default: a new temp dir)")
    parser.add_argument("--settle", type=float, default=120.0, help="bound on the wait for jobs to finish (default 120)")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    tmp = args.tmp or Path(tempfile.mkdtemp(prefix="pixq-chaos-"))
    report = asyncio.run(run(args.seconds, seed, tmp, settle_timeout=args.settle))
    text = report.markdown()
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print(f"chaos: {'PASS' if report.ok else 'FAIL'} (seed {seed}; logs in {tmp})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
