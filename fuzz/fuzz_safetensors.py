"""Differential fuzzing of ``read_safetensors`` against the ``safetensors`` package (no atheris, no torch).

Each input is a seed: a valid header of random tensors (every dtype of the format, shapes with
zeros, scalars, metadata or none), then damaged one of three ways: JSON-level edits (a dtype, a
shape entry, an offset changed; a field dropped, an extra field or tensor added; metadata of the
wrong type; offsets swapped), byte flips anywhere in the file (length prefix, header, data), or
a cut or an extension of the file. Both readers read the file: a finding is a file one accepts
and the other refuses, or one both accept on which they disagree about names, dtypes, shapes or
metadata. The one known difference, a tensor named twice (the crate keeps the last, ckptkeys
refuses it), is not a finding. Replay one with ``--seed N``.

    .venvs/py3.11/bin/python fuzz/fuzz_safetensors.py --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import struct
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import safetensors

from ckptkeys import SafetensorsHeaderError, read_safetensors
from ckptkeys._read._safetensors import DTYPE_BITS


def _valid(rng: random.Random) -> tuple[dict[str, Any], int]:
    header: dict[str, Any] = {}
    offset = 0
    for index in range(rng.randint(0, 5)):
        dtype = rng.choice(sorted(DTYPE_BITS))
        shape = [rng.choice((0, 1, 2, 3, 5, 8)) for _ in range(rng.randint(0, 3))]
        numel = 1
        for n in shape:
            numel *= n
        if numel * DTYPE_BITS[dtype] % 8:
            shape.append(8)
            numel *= 8
        size = numel * DTYPE_BITS[dtype] // 8
        name = rng.choice((f"t{index}", f"layer.{index}.weight", f"é{index}\u0001", f"\U0001f600{index}"))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if rng.random() < 0.5:
        header["__metadata__"] = {"format": "pt", "k": rng.choice(("", "v", "ü"))}
    return header, offset


def _edit(rng: random.Random, header: dict[str, Any]) -> None:
    names = [n for n in header if n != "__metadata__"]
    what = rng.randrange(9)
    if what == 0 and names:
        header[rng.choice(names)]["dtype"] = rng.choice([*DTYPE_BITS, "F128", "f32", 3, None])
    elif what == 1 and names:
        shape = header[rng.choice(names)]["shape"]
        value = rng.choice((0, 1, 7, -1, 2.0, True, "2", 2**64, 2**63))
        if shape and rng.random() < 0.7:
            shape[rng.randrange(len(shape))] = value
        else:
            shape.append(value)
    elif what == 2 and names:
        offsets = header[rng.choice(names)]["data_offsets"]
        offsets[rng.randrange(2)] += rng.choice((-1, 1, 8, -8, 2**64))
    elif what == 3 and names:
        del header[rng.choice(names)][rng.choice(("dtype", "shape", "data_offsets"))]
    elif what == 4 and names:
        header[rng.choice(names)]["extra"] = rng.choice((1, "x", None))
    elif what == 5:
        header["__metadata__"] = rng.choice(({"n": 1}, [], "x", None, {"a": None}))
    elif what == 6 and len(names) > 1:
        a, b = rng.sample(names, 2)
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    elif what == 7 and names:
        header[rng.choice(names)]["data_offsets"] = rng.choice(([0], [0, 0, 0], "0,0", [0.0, 1.0]))
    elif what == 8:
        header[f"new{rng.randrange(3)}"] = {"dtype": "U8", "shape": [rng.randrange(3)], "data_offsets": [0, 1]}


def make(seed: int) -> bytes:
    rng = random.Random(seed)
    header, size = _valid(rng)
    for _ in range(rng.choice((0, 0, 1, 2))):
        # An earlier edit may have taken what this one changes.
        with contextlib.suppress(KeyError, TypeError, AttributeError, IndexError):
            _edit(rng, header)
    text = json.dumps(header, ensure_ascii=rng.random() < 0.5).encode()
    if rng.random() < 0.8:
        text += b" " * (-len(text) % 8)
    content = bytearray(struct.pack("<Q", len(text)) + text + bytes(size))
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        content[rng.randrange(len(content))] = rng.choice(
            (0x20, 0x22, 0x2C, 0x30, 0x5C, 0x7B, 0x7D, 0xFF, rng.randrange(256))
        )
    if rng.random() < 0.1:
        content = content[: rng.randrange(len(content) + 1)]
    elif rng.random() < 0.05:
        content += bytes(rng.randrange(1, 9))
    return bytes(content)


def _named_twice(content: bytes) -> bool:
    try:
        (length,) = struct.unpack("<Q", content[:8])
        twice: list[bool] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            twice.append(len({k for k, _ in items}) != len(items))
            return dict(items)

        json.loads(content[8 : 8 + length], object_pairs_hook=pairs)
    except (ValueError, struct.error, RecursionError):
        return False
    return any(twice)


def check(seed: int, folder: str) -> str | None:
    """What differs on this seed's file, or ``None``."""
    content = make(seed)
    path = os.path.join(folder, "fuzz.safetensors")
    with open(path, "wb") as out:
        out.write(content)
    try:
        file = read_safetensors(path)
    except SafetensorsHeaderError as error:
        ours: Any = error
    else:
        ours = ({t.name: (t.dtype, list(t.shape)) for t in file.tensors}, file.metadata)
    try:
        with safetensors.safe_open(path, "numpy") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}  # noqa: SIM118
            theirs: Any = ({n: (s.get_dtype(), list(s.get_shape())) for n, s in slices.items()}, handle.metadata())
    except Exception as error:  # SafetensorError, and a few others on broken files
        theirs = error
    if isinstance(ours, Exception) and isinstance(theirs, Exception):
        return None
    if isinstance(ours, Exception):
        return None if _named_twice(content) else f"ckptkeys refuses ({ours}), the package reads it"
    if isinstance(theirs, Exception):
        return f"the package refuses ({theirs}), ckptkeys reads it"
    return None if ours == theirs else f"they read it differently: {ours} != {theirs}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, help="replay one seed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.seed is not None:
            print(check(args.seed, folder) or "no difference")
            return 0
        start, seed, findings = time.monotonic(), 0, 0
        while time.monotonic() - start < args.seconds:
            finding = check(seed, folder)
            if finding:
                findings += 1
                print(f"seed {seed}: {finding}")
            seed += 1
        print(f"{seed} files, {findings} findings in {time.monotonic() - start:.0f} s")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
