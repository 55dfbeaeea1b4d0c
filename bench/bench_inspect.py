"""Benchmark: ``ckptkeys inspect --json`` as a whole process, against torch and DeepSpeed.

Run: ``python bench/bench_inspect.py``. Three measurements, each a whole command in a fresh
process (interpreter start-up and imports included: what a user at a prompt waits for), median
of ``--runs`` after one untimed warm-up, with the child's peak memory (max RSS, from
``wait4``):

* the ~1 GB ZeRO-2 checkpoint of ``bench/bench_reader.py`` (made once and cached there):
  ``python -m ckptkeys inspect --json TAG`` against a script that prints the same top-level keys
  of every file with ``torch.load(mmap=True, weights_only=False)``, and against DeepSpeed's own
  ``DeepSpeedCheckpoint(TAG)`` printing its ZeRO and model keys;
* a synthetic 1024-rank ZeRO-2 tag (copies of a real shard, as ``bench/bench_scan.py`` makes):
  ``inspect --json`` time and peak memory.

Target (issue 4): inspect at least 10x faster than the torch.load(mmap=True) script. Figures
are printed, never asserted. Without torch the comparisons are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_reader  # noqa: E402
import bench_scan  # noqa: E402

TORCH_SCRIPT = """
import glob, json, os, sys
import torch
keys = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.pt"))):
    state = torch.load(path, mmap=True, weights_only=False, map_location="cpu")
    keys[os.path.basename(path)] = [str(key) for key in state]
print(json.dumps(keys))
"""

DEEPSPEED_SCRIPT = """
import json, sys
from deepspeed.checkpoint import DeepSpeedCheckpoint
checkpoint = DeepSpeedCheckpoint(sys.argv[1])
state = checkpoint.get_zero_checkpoint_state(pp_index=0, tp_index=0, dp_index=0)
print(json.dumps({"zero": [str(k) for k in state], "model": checkpoint.get_iteration()}))
"""


def run(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one whole process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=bench_reader.child_env(), stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # reaped here, so the rusage is this child's own
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode not in (0, 1):  # inspect exits 1 when it found problems
        sys.exit(f"{command[:4]} failed ({child.returncode}):\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, stdout


def measure(command: list[str], runs: int) -> tuple[float, float, str]:
    samples = [run(command) for _ in range(runs + 1)][1:]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples), samples[-1][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per figure (median)")
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / "bench/_work/reader", help="cache folder")
    args = parser.parse_args()
    inspect = [sys.executable, "-m", "ckptkeys", "inspect", "--json"]
    print(f"Python {sys.version.split()[0]}; each figure a whole process, median of {args.runs}")

    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: the 1 GB checkpoint cannot be made; skipped.")
    else:
        source = "deepspeed" if importlib.util.find_spec("deepspeed") else "synthetic"
        save_dir, made = bench_reader.checkpoint_dir(args.work_dir.resolve(), source, regenerate=False)
        tag = save_dir / bench_reader.TAG
        size = sum(p.stat().st_size for p in tag.glob("*.pt"))
        print(f"\n{tag} ({made['how']}; {size / 1e9:.2f} GB)")
        ours, ours_mb, out = measure([*inspect, str(tag)], args.runs)
        document = json.loads(out)
        keys = {f["relpath"]: f["top_level_keys"] for t in document["tags"] for f in t["files"]}
        torch_s, torch_mb, torch_out = measure([sys.executable, "-c", TORCH_SCRIPT, str(tag)], args.runs)
        assert json.loads(torch_out) == keys, "the torch script printed other keys than inspect"
        rows = [
            ("ckptkeys inspect --json", ours, ours_mb),
            ("torch.load(mmap=True) script", torch_s, torch_mb),
        ]
        if source == "deepspeed":
            ds_s, ds_mb, _ = measure([sys.executable, "-c", DEEPSPEED_SCRIPT, str(tag)], args.runs)
            rows.append(("DeepSpeedCheckpoint(tag)", ds_s, ds_mb))
        print(f"  {'command':<32} {'time':>10} {'peak RSS':>10} {'x inspect':>10}")
        for name, seconds, peak in rows:
            print(f"  {name:<32} {seconds * 1e3:8.0f}ms {peak:8.1f}MB {seconds / ours:9.1f}x")
        print("  target (issue 4): the torch.load(mmap=True) script at least 10x slower than inspect")

    with tempfile.TemporaryDirectory() as tmp:
        folder = bench_scan.make_folder(pathlib.Path(tmp), 1024)
        seconds, peak, out = measure([*inspect, str(folder)], args.runs)
        files = len(json.loads(out)["tags"][0]["files"])
        print(f"\nsynthetic 1024-rank ZeRO-2 tag ({files} files, copies of a real shard)")
        per_file = seconds / files * 1e6
        print(f"  ckptkeys inspect --json: {seconds * 1e3:.0f} ms ({per_file:.0f} us/file), peak RSS {peak:.1f} MB")


if __name__ == "__main__":
    main()
