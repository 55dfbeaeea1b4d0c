"""Benchmark: ``ckptkeys.read`` of this tree against an earlier revision, on real checkpoints.

Run: ``python bench/bench_read_ab.py [--base REV] [--checkpoint DIR]``. The base revision's
``src/`` is exported with ``git archive`` into a temporary folder; each figure is the first
``read`` of a file in a fresh interpreter (the way a user's command meets it), the two trees
alternating, median of ``--runs``. Files: every ``.pt`` under ``tests/data/fixtures`` (read one
after another in one process: a ``scan``'s cost), and each file of ``--checkpoint`` (the ~1 GB
ZeRO-2 tag ``bench/bench_reader.py`` makes under ``bench/_work/reader``), if it exists.
Prints each figure for both trees and the ratio now/base. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import ckptkeys
if sys.argv[2] == "read":  # the reader's modules imported before the clock: the read alone
    ckptkeys.read
paths = sys.argv[3:]
start = time.perf_counter()
for p in paths:
    ckptkeys.read(p)
print(time.perf_counter() - start)
"""
# "first": the first ckptkeys.read in a fresh interpreter, its lazy imports included (what a user's
# command meets); "read": the same call with the reader's modules imported before the clock.
MODES = ("first", "read")


def _time(src: pathlib.Path, mode: str, paths: list[str]) -> float:
    command = [sys.executable, "-c", CHILD, str(src), mode, *paths]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="0352215", help="the revision to compare with")
    parser.add_argument("--runs", type=int, default=9, help="fresh interpreters per figure and tree (median)")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=ROOT / "bench/_work/reader/deepspeed/global_step1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "src"], capture_output=True, check=True)
        with tarfile.open(fileobj=__import__("io").BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        trees = {"base": pathlib.Path(folder) / "src", "now": ROOT / "src"}
        sets = {"fixtures (every .pt, one process)": sorted(map(str, (ROOT / "tests/data/fixtures").rglob("*.pt")))}
        if args.checkpoint.is_dir():
            for path in sorted(args.checkpoint.glob("*.pt")):
                sets[f"{path.name} ({path.stat().st_size / 1e6:.0f} MB)"] = [str(path)]
        print(f"read() in a fresh interpreter, median of {args.runs}; base = {args.base}")
        for mode in MODES:
            print(f"{mode}: " + ("lazy imports included" if mode == "first" else "the reader's modules imported first"))
            for label, paths in sets.items():
                for tree in trees.values():  # untimed warm-up: page cache, bytecode
                    _time(tree, mode, paths)
                times: dict[str, list[float]] = {name: [] for name in trees}
                for _ in range(args.runs):
                    for name, tree in trees.items():
                        times[name].append(_time(tree, mode, paths))
                base, now = (statistics.median(times[name]) * 1e3 for name in ("base", "now"))
                print(f"  {label}: base {base:.2f} ms, now {now:.2f} ms, now/base {now / base:.3f}")


if __name__ == "__main__":
    main()
