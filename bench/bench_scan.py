"""Benchmark: ``ckptkeys.scan`` of synthetic ZeRO folders with 128 to 1024 data-parallel ranks.

Run: ``python bench/bench_scan.py``. Each folder is one tag of a ZeRO-2 bf16 run: one
``mp_rank_00_model_states.pt`` and N optimizer shards, every file a copy of a real shard from
the test fixtures (a few KB each, so the figures measure scanning, not the disk; the copies
keep the fixture's dp_world_size of 2, which scan does not cross-check). Each scan
runs in a fresh interpreter (warm bytecode and page caches), names only and with every file
read, and the script prints the time per file: flat per-file figures show the time grows
linearly with the number of files. Peak memory (max RSS of the child) is printed too.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARD = ROOT / "tests/data/fixtures/z2_bf16_ws2/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
MODEL = ROOT / "tests/data/fixtures/z2_bf16_ws2/global_step3/mp_rank_00_model_states.pt"
SIZES = (128, 256, 512, 1024)

CHILD = """
import resource, sys, time
import ckptkeys
scan = ckptkeys.scan  # imports the scanning modules; what a user's command pays once
start = time.perf_counter()
layout = scan(sys.argv[1], read=sys.argv[2] == "read")
elapsed = time.perf_counter() - start
tag = layout.tags[0]
assert len(tag.files) == int(sys.argv[3]) + 1, len(tag.files)
assert not layout.all_problems, layout.all_problems[:3]
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_folder(base: pathlib.Path, ranks: int) -> pathlib.Path:
    save = base / f"ranks_{ranks}"
    tag = save / "global_step1"
    tag.mkdir(parents=True)
    shutil.copy(MODEL, tag / "mp_rank_00_model_states.pt")
    for dp in range(ranks):
        shutil.copy(SHARD, tag / f"bf16_zero_pp_rank_{dp}_mp_rank_00_optim_states.pt")
    (save / "latest").write_text("global_step1")
    return save


def measure(folder: pathlib.Path, mode: str, ranks: int, runs: int) -> tuple[float, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times, peaks = [], []
    for _ in range(runs + 1):  # the first run warms the caches and is dropped
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder), mode, str(ranks)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        times.append(float(out[0]))
        peaks.append(int(out[1]))
    return statistics.median(times[1:]), max(peaks[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per figure")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; each shard {SHARD.stat().st_size} bytes (a real ZeRO-2 shard)")
    header = ("ranks", "files", "names only", "per file", "read all", "per file", "peak RSS")
    print("{:>6} {:>6} | {:>11} {:>9} | {:>9} {:>9} {:>9}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in SIZES:
            folder = make_folder(pathlib.Path(tmp), ranks)
            files = ranks + 1
            names, _ = measure(folder, "names", ranks, args.runs)
            full, peak = measure(folder, "read", ranks, args.runs)
            print(
                f"{ranks:>6} {files:>6} | {names * 1e3:9.1f}ms {names / files * 1e6:7.1f}us |"
                f" {full * 1e3:7.0f}ms {full / files * 1e6:7.0f}us {peak / 1024:7.1f}MB"
            )


if __name__ == "__main__":
    main()
