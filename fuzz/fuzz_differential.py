"""Differential fuzzing: ckptkeys against torch.load itself, with atheris.

Each input is written to a file and read twice: by ``ckptkeys.read`` and by ``torch.load(path,
weights_only=False)`` through the recording oracle of tests/differential.py, which lets C pickle
resolve every global for real but calls none that torch's weights-only list does not allow. A
finding is any global torch resolved that ckptkeys did not report (for a file it did not refuse as
ambiguous or unsupported), or a global ckptkeys calls "allowed" that torch's weights-only unpickler
refuses. Needs torch; imports what fuzzed names name: run it in a throwaway environment.
See fuzz/README.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

with atheris.instrument_imports():
    import ckptkeys
    from ckptkeys._read import _globals, _pickle, _reader, _torch, _zip  # noqa: F401  (instrumented)
    from ckptkeys._read._limits import Limits

import torch  # noqa: F401  (imported before the clock: the oracle loads with it)
from tests import differential

warnings.simplefilter("ignore")
LIMITS = Limits(max_pickle_bytes=1 << 20, max_objects=100_000, max_memo=100_000, max_string_bytes=1 << 16)
FOLDER = tempfile.mkdtemp(prefix="ckptkeys-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(FOLDER, "input.pt")


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as file:
        file.write(data)
    try:
        refs = list(ckptkeys.read(PATH, limits=LIMITS).globals)
    except (ckptkeys.AmbiguousFileError, ckptkeys.UnsupportedFormatError):
        return
    except ckptkeys.LimitError:
        return  # a refusal for size: torch may read further than the small fuzzing limits allow
    except ckptkeys.ReadError as error:
        refs = list(error.globals)
    found = differential.findings(PATH)
    wrong = differential.allowed_claims_hold(refs)
    if found or wrong:
        raise AssertionError(f"torch and ckptkeys disagree: {found} {wrong}")


def _bound_address_space(extra: int = 2 << 30) -> None:
    """Let torch.load fail, as a caught error, on a storage a mutated size makes huge, instead of
    exhausting the machine: address space is capped at what the process uses now plus ``extra``."""
    import resource

    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, resource.RLIM_INFINITY))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    _bound_address_space()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
