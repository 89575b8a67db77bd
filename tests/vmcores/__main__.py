"""``python -m tests.vmcores``: build and inspect the real-kernel lab.

  python -m tests.vmcores build [--kernel NAME]... [--jobs N]   fetch kernels, build vmcores (cached)
  python -m tests.vmcores list                                  what is built, with paths
  python -m tests.vmcores path [--kernel NAME]                  print the vmcore, then -s arguments
  python -m tests.vmcores random [--seeds N] [--start S] [--seed S]... [--kernel NAME]...
                                  build random scenarios (scenarios.py) and check report on them

Environment: SKBINSPECT_LAB_CACHE (cache root, default ~/.cache/skbinspect-lab),
SKBINSPECT_LAB_KERNELS (comma-separated kernels for the test suite), SKBINSPECT_LAB_MIRROR.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from .config import DEFAULT_KERNEL, KERNELS, cache_dir, kernel_names
from .kernels import LabError, load_cached_kernel
from .lab import TEST_BOOTS, build, load_vmcore


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.vmcores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch kernels and build lab vmcores")
    b.add_argument(
        "--kernel", action="append", choices=list(KERNELS), help="default: $SKBINSPECT_LAB_KERNELS or all"
    )
    b.add_argument("--jobs", type=int, default=2, help="guests booted in parallel (default 2)")
    b.add_argument(
        "--boot",
        action="append",
        help="scenario boot to build, repeatable (default: the boots the "
        f"test suite uses: {', '.join(TEST_BOOTS)}); others: bench-ring, ..., random-<seed>",
    )
    r = sub.add_parser(
        "random",
        help="long mode: build seeded random scenarios and check report on each (random_check.py)",
        description="Build random-<seed> boots on each kernel, check report's JSON on each against the "
        "guest's truth, print one line per (kernel, seed) and a summary.  Vmcores that pass are deleted "
        "(each is 256 MB) unless --keep; failing ones stay in the cache for replay.",
    )
    r.add_argument("--seeds", type=int, default=10, help="how many seeds, from --start (default 10)")
    r.add_argument("--start", type=int, default=1000, help="first seed (default 1000; CI's are small)")
    r.add_argument("--seed", type=int, action="append", help="these seeds instead (repeatable)")
    r.add_argument(
        "--kernel", action="append", choices=list(KERNELS), help="default: $SKBINSPECT_LAB_KERNELS or all"
    )
    r.add_argument("--jobs", type=int, default=2, help="guests booted in parallel (default 2)")
    r.add_argument("--keep", action="store_true", help="keep the vmcores that pass")
    r.add_argument("--out", help="append one JSON line per (kernel, seed) to this file")
    sub.add_parser("list", help="list built vmcores")
    pa = sub.add_parser("path", help="print a built vmcore's path and its -s arguments")
    pa.add_argument("--kernel", default=DEFAULT_KERNEL, choices=list(KERNELS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.cmd == "build":
            t = time.monotonic()
            labs = build(args.kernel or kernel_names(), args.boot or TEST_BOOTS, args.jobs)
            for lab in labs:
                where = (
                    lab.vmcore
                    if os.path.exists(lab.vmcore)
                    else f"{lab.dir} (no vmcore: ran inside the guest)"
                )
                print(
                    f"{lab.kernel.name:9} {lab.boot:10} {lab.kernel.release:28} {where}  {json.dumps(lab.timings)}"
                )
            print(f"lab built in {time.monotonic() - t:.0f} s (cache: {cache_dir()})")
        elif args.cmd == "random":
            from .random_check import long_run

            seeds = args.seed or list(range(args.start, args.start + args.seeds))
            return long_run(args.kernel or kernel_names(), seeds, args.jobs, args.keep, args.out)
        elif args.cmd == "list":
            for name, spec in KERNELS.items():
                k = load_cached_kernel(spec)
                lab = load_vmcore(k) if k else None
                print(
                    f"{name:9} {spec.series:5} {k.release if k else '-':28} {lab.vmcore if lab else '(not built)'}"
                )
        elif args.cmd == "path":
            k = load_cached_kernel(KERNELS[args.kernel])
            lab = load_vmcore(k) if k else None
            if lab is None:
                print(
                    f"{args.kernel}: not built; run: python -m tests.vmcores build --kernel {args.kernel}",
                    file=sys.stderr,
                )
                return 1
            print(lab.vmcore)
            for s in lab.symbols:
                print(s)
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
