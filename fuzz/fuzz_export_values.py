"""Differential fuzzing of export's values against torch.load (needs torch; CPython 3.11 here).

Each input is a seed: even seeds a file built pickle by pickle (``random_case``: storage keys as
str, int, bytes or with a NUL, typed and untyped storages, ``_rebuild_tensor_v2``/``_v3`` views
with any offset and stride, neg/conj metadata, Parameters with and without state, states that
replace ``data``, subclasses, byte order little, big or absent, pickle protocols 2-5), odd seeds a
``torch.save`` of random tensors made by torch (views, expanded, negative and conjugate views,
Parameters, a subclass) whose byte-order record is then set to big or removed and whose storage
keys are re-pickled as ints or bytes (``torch_saved_case``). The tag folder is exported with
``ckptkeys.plan_export`` + ``write_export`` and compared with ``torch.load(weights_only=False)``
by tests/export_values.py's ``check``: every tensor written must be torch's value made contiguous,
bit for bit, or the export refused naming a tensor. Findings (seed and what differs) are printed
and appended to ``--findings``; replay one with ``--seed N``.

    DS_ACCELERATOR=cpu .venvs/py3.11/bin/python fuzz/fuzz_export_values.py --seconds 600

The files are our own: loading them with ``weights_only=False`` runs only torch's rebuilds and
tests/value_tensor.py's subclass.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import tempfile
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.export_values import check, random_case, refusal_kind, torch_saved_case  # noqa: E402


def run(seed: int, folder: pathlib.Path, text_ints: bool = False) -> tuple[str, list[str]]:
    """The outcome's label and the findings of input ``seed``."""
    tag = folder / f"s{seed}" / "global_step1"
    if seed % 2 == 0:
        random_case(seed // 2, text_ints=text_ints).write(tag)
    else:
        torch_saved_case(seed // 2, tag)
    outcome = check(tag, folder / f"s{seed}" / "out")
    if outcome.findings:
        return "finding", outcome.findings
    if outcome.refused is not None:
        return "refused: " + refusal_kind(outcome.refused), []
    return ("both fail" if outcome.both_failed else "exact"), []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="run for this long")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="run this one input and print its outcome")
    parser.add_argument("--text-ints", action="store_true", help="write some storage offsets as text INT opcodes")
    parser.add_argument("--findings", type=pathlib.Path, default=ROOT / "fuzz" / "findings-export-values.txt")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch's TypedStorage deprecation, once per input
    counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if pathlib.Path("/dev/shm").is_dir() else None) as name:
        folder = pathlib.Path(name)
        if args.seed is not None:
            print(run(args.seed, folder, args.text_ints))
            return
        start = time.monotonic()
        seed = args.start
        while time.monotonic() - start < args.seconds:
            label, findings = run(seed, folder, args.text_ints)
            counts[label] += 1
            if findings:
                line = f"seed {seed}: {findings}"
                print(line, flush=True)
                with args.findings.open("a", encoding="utf-8") as stream:
                    stream.write(line + "\n")
            for path in sorted((folder / f"s{seed}").rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (folder / f"s{seed}").rmdir()
            seed += 1
        elapsed = time.monotonic() - start
    total = sum(counts.values())
    print(f"{total} inputs (seeds {args.start}..{seed - 1}) in {elapsed:.0f} s: {total / elapsed:.0f} inputs/s")
    for label, count in counts.most_common():
        print(f"  {count:7d}  {label}")


if __name__ == "__main__":
    main()
