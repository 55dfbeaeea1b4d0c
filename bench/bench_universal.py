"""Benchmark: ``ckptkeys universal`` against DeepSpeed's ``ds_to_universal`` and the floor.

Run: ``python bench/bench_universal.py [--runs 3] [--scale4]``. The checkpoint is
``bench/bench_export.py``'s ZeRO-2 fp32 AdamW save of a 66.3M-parameter model (made once with
DeepSpeed, cached under ``bench/_work/export/``, shared with that bench): ~1.06 GB, no
``universal_checkpoint_info``, so both converters run with their inject-missing-state option.
``--scale4`` adds the 4x larger one (265M parameters, ~4.2 GB) to show that ckptkeys' memory
does not grow with the model.

Every figure is a whole command in a fresh process, as a user runs it (interpreter start-up and
imports included), median of ``--runs`` after one warm-up (warm page cache):

* ``ckptkeys universal CKPT --output-folder OUT --inject-missing-state --overwrite`` (fsync of
  every file, the default), and with ``--no-fsync``;
* ``python -m deepspeed.checkpoint.ds_to_universal --input_folder TAG --output_folder OUT
  --inject_missing_state`` with its default workers (4 extract, 2 merge processes);
* the floor: ``cat`` of every source file of the tag to ``/dev/null`` (reading the sources once),
  then ``dd`` writing the output's number of bytes once, ``conv=fsync`` against the default and
  without against ``--no-fsync``; and the floor of ckptkeys' fsync policy, one ``dd conv=fsync``
  per output file of its size (ckptkeys fsyncs each of its ~70 files before the rename; one
  fsync of one file is cheaper than 70 on most disks).

Peak RSS is ``wait4``'s ``ru_maxrss`` of the command (the largest single process of its tree);
the warm-up run is also sampled every 20 ms for the sum of the RSS of the whole process tree
(DeepSpeed's worker processes) and for the disk used under the output's parent folder (the
output, ``ds_to_universal``'s ``tmp/`` and ckptkeys' staging folder): the disk peak.

The issue's targets: within 2x of the floor, >= 5x faster than ``ds_to_universal``, peak RSS under
100 MB and flat in the model's size, disk peak = the output's size. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_export  # noqa: E402

import ckptkeys  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.02


@dataclass
class Figure:
    seconds: float
    max_rss_kib: int


@dataclass
class Peaks:
    tree_rss_bytes: int
    disk_bytes: int
    output_bytes: int


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``, from each process's parent in ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def disk_used(folder: pathlib.Path) -> int:
    """Bytes allocated under ``folder`` (blocks, as ``du`` counts them); files that vanish are skipped."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                continue
    return total


def apparent_size(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clean(out: pathlib.Path) -> None:
    """The output's parent holds only what the command writes: the output, ``latest_universal``,
    ckptkeys' staging folder, ``ds_to_universal``'s ``tmp/`` inside the output."""
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)


def start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=bench_export.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(command: list[str], process: subprocess.Popen[bytes], status: int) -> None:
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{error[-3000:]}")


def run(command: list[str], out: pathlib.Path) -> Figure:
    """One command in a fresh process: wall time and ``ru_maxrss``."""
    clean(out)
    began = time.perf_counter()
    process = start(command)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - began
    finish(command, process, status)
    return Figure(elapsed, usage.ru_maxrss)


def sampled(command: list[str], out: pathlib.Path) -> Peaks:
    """One untimed run, sampled: the process tree's summed RSS and the disk used under the output's parent."""
    clean(out)
    process = start(command)
    peaks = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            tree = sum(rss(pid) for pid in [process.pid, *children(process.pid)])
            peaks[0] = max(peaks[0], tree)
            peaks[1] = max(peaks[1], disk_used(out.parent))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _ = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    finish(command, process, status)
    peaks[1] = max(peaks[1], disk_used(out.parent))
    return Peaks(peaks[0], peaks[1], apparent_size(out))


def measure(command: list[str], out: pathlib.Path, runs: int) -> tuple[Figure, Peaks]:
    peaks = sampled(command, out)  # also the warm-up: page cache, bytecode
    figures = [run(command, out) for _ in range(runs)]
    return Figure(statistics.median(f.seconds for f in figures), max(f.max_rss_kib for f in figures)), peaks


def has_universal_command() -> bool:
    """Whether this tree's ``ckptkeys`` has the ``universal`` command (it is being built on other branches)."""
    done = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "universal", "--help"], env=bench_export.env(), capture_output=True
    )
    return done.returncode == 0


def floor_command(sources: list[pathlib.Path], output: pathlib.Path, size: int, fsync: bool) -> list[str]:
    """Read every source byte once (``cat`` to /dev/null), write ``size`` bytes once (``dd``)."""
    dd = f"dd if=/dev/zero of={output} bs=8M count={size} iflag=count_bytes status=none"
    read = "cat " + " ".join(str(s) for s in sources) + " > /dev/null"
    return ["sh", "-c", f"{read} && {dd}{' conv=fsync' if fsync else ''}"]


def per_file_floor(sources: list[pathlib.Path], folder: pathlib.Path, sizes: list[int]) -> list[str]:
    """The floor with ckptkeys' fsync policy: the sources read once, then one file per output file,
    of its size, each fsynced (``dd conv=fsync``), as ckptkeys fsyncs each file before the rename."""
    read = "cat " + " ".join(str(s) for s in sources) + " > /dev/null"
    writes = [
        f"dd if=/dev/zero of={folder / f'{n}.bin'} bs=8M count={size} iflag=count_bytes status=none conv=fsync"
        for n, size in enumerate(sizes)
    ]
    return ["sh", "-c", " && ".join([read, *writes])]


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / "bench/_work/export", help="checkpoint cache")
    parser.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "bench/_work/universal", help="outputs")
    parser.add_argument("--scale4", action="store_true", help="also the ZeRO-2 checkpoint 4x larger (4.2 GB)")
    parser.add_argument("--no-deepspeed", action="store_true", help="skip ds_to_universal (slow)")
    args = parser.parse_args()
    missing = [m for m in ("torch", "deepspeed") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{', '.join(missing)} not installed: no checkpoint to make and nothing to compare with; skipped.")
        return
    ours_available = has_universal_command()
    work, outs = args.work_dir.resolve(), args.out_dir.resolve()
    print(f"Python {sys.version.split()[0]}, ckptkeys {ckptkeys.__version__}; median of {args.runs}, fresh processes")
    if not ours_available:
        print("(this tree's ckptkeys has no `universal` command yet: ds_to_universal and the floor only)")
    for scale in [1, 4] if args.scale4 else [1]:
        save_dir, made = bench_export.make(work, 2, scale)
        tag = save_dir / bench_export.TAG
        sources = sorted(tag.glob("*.pt"))
        name = f"{bench_export.TAG}_universal"
        rows: list[tuple[str, Figure, Peaks | None]] = []
        ours = ours_nosync = theirs = None
        output_size = 0
        file_sizes: list[int] = []
        if ours_available:
            out = outs / "ckptkeys" / name
            command = [sys.executable, "-m", "ckptkeys", "universal", str(save_dir), "--output-folder", str(out)]
            command += ["--inject-missing-state", "--overwrite"]
            ours = measure(command, out, args.runs)
            output_size = ours[1].output_bytes
            file_sizes = [p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()]
            ours_nosync = measure([*command, "--no-fsync"], out, args.runs)
            rows += [("ckptkeys universal (fsync)", *ours), ("ckptkeys universal --no-fsync", *ours_nosync)]
        if not args.no_deepspeed:
            out = outs / "ds_to_universal" / name
            command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(tag)]
            command += ["--output_folder", str(out), "--inject_missing_state"]
            theirs = measure(command, out, args.runs)
            output_size = output_size or theirs[1].output_bytes
            rows.append(("ds_to_universal --inject_missing_state", *theirs))
        floor = floor_sync = None
        if output_size:
            out = outs / "floor" / "out.bin"
            floor_sync = measure(floor_command(sources, out, output_size, True), out, args.runs)
            floor = measure(floor_command(sources, out, output_size, False), out, args.runs)
            rows += [("floor: cat sources + dd conv=fsync", *floor_sync), ("floor: cat sources + dd", *floor)]
        floor_files = None
        if file_sizes:
            out = outs / "floor" / "files" / "x"
            floor_files = measure(per_file_floor(sources, out.parent, file_sizes), out, args.runs)
            rows.append((f"floor: cat + dd conv=fsync per file ({len(file_sizes)})", *floor_files))

        parameters = sum(t.numel for t in ckptkeys.plan_export(save_dir).tensors)
        size = sum(s.stat().st_size for s in sources)
        print(f"\nZeRO-2 fp32 AdamW, {parameters:,} parameters: checkpoint {mb(size)} "
              f"in {len(sources)} files, universal output {mb(output_size)}")  # fmt: skip
        print(f"  made by: {made['how']}")
        print(f"  {'command':<40} {'time':>8} {'peak RSS':>9} {'tree RSS':>9} {'disk peak':>10}")
        for label, figure, peaks in rows:
            tree = f"{peaks.tree_rss_bytes / 2**20:7.0f}MB" if peaks else ""
            disk = mb(peaks.disk_bytes) if peaks and peaks.disk_bytes else ""
            print(f"  {label:<40} {figure.seconds:7.2f}s {figure.max_rss_kib / 1024:7.1f}MB {tree:>9} {disk:>10}")
        if ours is not None and theirs is not None:
            tree_ratio = theirs[1].tree_rss_bytes / max(ours[1].tree_rss_bytes, 1)
            print(f"  ds_to_universal / ckptkeys: time {theirs[0].seconds / ours[0].seconds:.1f}x, peak RSS "
                  f"{theirs[0].max_rss_kib / ours[0].max_rss_kib:.1f}x, tree RSS {tree_ratio:.1f}x  "
                  "(target: >= 5x faster)")  # fmt: skip
            if ours_nosync is not None:  # ds_to_universal never fsyncs (torch.save does not)
                print(f"  ds_to_universal / ckptkeys --no-fsync (the same durability): "
                      f"{theirs[0].seconds / ours_nosync[0].seconds:.1f}x")  # fmt: skip
        if ours is not None and ours_nosync is not None and floor is not None and floor_sync is not None:
            print(f"  ckptkeys / floor: {ours[0].seconds / floor_sync[0].seconds:.2f}x (both fsync), "
                  f"{ours_nosync[0].seconds / floor[0].seconds:.2f}x (no fsync)  (target: within 2x)")  # fmt: skip
            if floor_files is not None:
                print(f"  ckptkeys / floor of its fsync policy (a dd conv=fsync per output file): "
                      f"{ours[0].seconds / floor_files[0].seconds:.2f}x")  # fmt: skip
            print(f"  ckptkeys peak RSS {ours[0].max_rss_kib / 1024:.1f} MB (target: under 100 MB, flat); disk peak "
                  f"{ours[1].disk_bytes / max(output_size, 1):.2f}x the output (target: 1.00x)")  # fmt: skip
        if theirs is not None:
            print(f"  ds_to_universal disk peak {theirs[1].disk_bytes / max(output_size, 1):.2f}x the output")
        shutil.rmtree(outs, ignore_errors=True)


if __name__ == "__main__":
    main()
