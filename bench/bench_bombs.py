"""Benchmark: what a small hostile zip costs ``ckptkeys.read``: time and peak memory.

Run: ``python bench/bench_bombs.py [--src DIR] [--ops N] [--inflate-ratio R]``. Each bomb is a torch-zip archive whose
``data.pkl`` is deflated (built with ``tests/security_cases.py``'s writer): a protocol-4 pickle of
``N`` repetitions of one cheap opcode (``MEMOIZE`` on one object, ``EMPTY_DICT``, ``EMPTY_LIST``,
``NONE``, a ``REDUCE`` of a memoized global, a list of ``EMPTY_LIST``, ``EMPTY_LIST`` nested
by ``APPEND``, a list of ``EMPTY_DICT``; ``PROTO`` and ``NONE``+``POP``, which make nothing), ending
in ``STOP``. With the default limits each is refused for its inflation (``max_inflate_ratio``);
``--inflate-ratio 1000000`` lifts that limit to measure what the rest of the limits do. Each file is read in a fresh interpreter (``--src`` is the tree to import); printed:
the archive's size, the outcome (the error's limit, or ``ok``), the wall time and the child's peak
RSS. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.security_cases import _records, zip_archive  # noqa: E402

CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
import ckptkeys
limits = ckptkeys.Limits(max_inflate_ratio=int(sys.argv[3])) if len(sys.argv) > 3 else None
start = time.perf_counter()
try:
    ckptkeys.read(sys.argv[2], limits=limits)
    outcome = "ok"
except ckptkeys.LimitError as error:
    outcome = "LimitError " + error.limit
except ckptkeys.ReadError as error:
    outcome = type(error).__name__ + ": " + error.reason[:60]
elapsed = time.perf_counter() - start
try:  # this process image's own peak (ru_maxrss keeps the parent's from before exec)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{outcome}|{elapsed:.2f}|{peak / 1024:.0f}")
"""


def bombs(ops: int) -> dict[str, bytes]:
    head = b"\x80\x04"
    global_ = b"\x8c\x08builtins\x8c\x06object\x93\x94"  # memo 0: a global
    return {
        "MEMOIZE": head + b"N" + b"\x94" * ops + b".",
        "EMPTY_DICT": head + b"}" * ops + b".",
        "EMPTY_LIST": head + b"]" * ops + b".",
        "EMPTY_SET": head + b"\x8f" * ops + b".",
        "NONE": head + b"N" * ops + b".",
        "REDUCE": head + global_ + b"0" + b"h\x00)R" * (ops // 4) + b".",
        "list of lists": head + b"]" + b"]a" * (ops // 2) + b".",
        "nested lists": head + b"]" * (ops // 2) + b"a" * (ops // 2 - 1) + b".",
        "list of dicts": head + b"]" + b"}a" * (ops // 2) + b".",
        "PROTO": b"\x80\x04" * ops + b"}.",
        "NONE-POP": head + b"N0" * (ops // 2) + b"}.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=pathlib.Path, default=ROOT / "src")
    parser.add_argument("--ops", type=int, default=20_000_000)
    parser.add_argument("--inflate-ratio", type=int, help="Limits(max_inflate_ratio=...) for the reads")
    args = parser.parse_args()
    ratio = [] if args.inflate_ratio is None else [str(args.inflate_ratio)]
    with tempfile.TemporaryDirectory() as folder:
        for name in bombs(0):  # built one at a time
            path = pathlib.Path(folder) / "bomb.pt"
            path.write_bytes(zip_archive(_records(bombs(args.ops)[name]), method=8))
            command = [sys.executable, "-c", CHILD, str(args.src), str(path), *ratio]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            outcome, elapsed, rss = (result.stdout.strip() or f"crash {result.returncode}||").split("|")
            print(f"{name:14} {path.stat().st_size / 1e3:7.1f} KB  {outcome:40} {elapsed:>6} s  {rss:>6} MB")


if __name__ == "__main__":
    main()
