"""Benchmark: what a small hostile zip costs ``ckptkeys.read``: time and peak memory.

Run: ``python bench/bench_bombs.py [--src DIR] [--ops N]``. Each bomb is a torch-zip archive whose
``data.pkl`` is deflated (built with ``tests/security_cases.py``'s writer): a protocol-4 pickle of
``N`` repetitions of one cheap opcode (``MEMOIZE`` on one object, ``EMPTY_DICT``, ``EMPTY_LIST``,
``NONE``, a ``REDUCE`` of a memoized global, a list of ``EMPTY_LIST``, ``EMPTY_LIST`` nested
by ``APPEND``, a list of ``EMPTY_DICT``), ending
in ``STOP``. Each file is read in a fresh interpreter (``--src`` is the tree to import); printed:
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
start = time.perf_counter()
try:
    ckptkeys.read(sys.argv[2])
    outcome = "ok"
except ckptkeys.LimitError as error:
    outcome = "LimitError " + error.limit
except ckptkeys.ReadError as error:
    outcome = type(error).__name__ + ": " + error.reason[:60]
elapsed = time.perf_counter() - start
print(f"{outcome}|{elapsed:.2f}|{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=pathlib.Path, default=ROOT / "src")
    parser.add_argument("--ops", type=int, default=20_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, pkl in bombs(args.ops).items():
            path = pathlib.Path(folder) / "bomb.pt"
            path.write_bytes(zip_archive(_records(pkl), method=8))
            command = [sys.executable, "-c", CHILD, str(args.src), str(path)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            outcome, elapsed, rss = (result.stdout.strip() or f"crash {result.returncode}||").split("|")
            print(f"{name:14} {path.stat().st_size / 1e3:7.1f} KB  {outcome:40} {elapsed:>6} s  {rss:>6} MB")


if __name__ == "__main__":
    main()
