"""Coverage-guided fuzzing of the reader with atheris.

Every input is tried as a raw pickle (the inert pickle machine), as a torch-zip archive and as
a legacy torch file; the only acceptable outcomes are a result or a ``ckptkeys.ReadError``.
Any other exception, a crash or a hang is a bug. See fuzz/README.md for how to run it.
"""

from __future__ import annotations

import contextlib
import io
import sys

import atheris

with atheris.instrument_imports():
    import ckptkeys
    from ckptkeys._read import _pickle, _reader
    from ckptkeys._read._limits import Limits

# Small limits keep every input cheap; the limits' own checks are part of what is fuzzed.
LIMITS = Limits(
    max_pickle_bytes=1 << 20, max_objects=100_000, max_memo=100_000, max_string_bytes=1 << 16, max_structure_bytes=1 << 23
)


def test_one_input(data: bytes) -> None:
    try:
        result = _pickle.unpickle(data, limits=LIMITS)
    except ckptkeys.ReadError:
        pass
    else:
        # The reader skips its depth pass while this count is under the limit: it must bound the depth.
        depth = _pickle._check_depth(result.value, 10**9, "<fuzz>")
        if depth > result.containers:
            raise AssertionError(f"depth {depth} > counted containers {result.containers}")
    for reader in (_reader._read_zip, _reader._read_legacy):
        with contextlib.suppress(ckptkeys.ReadError):
            reader("<fuzz>", io.BytesIO(data), len(data), LIMITS)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
