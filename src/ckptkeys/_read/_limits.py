"""The reader's resource limits: every bound on what reading a file may cost.

A checkpoint DeepSpeed writes is far inside every default; a file that is not (a zip bomb, a
pickle that builds a billion objects) ends with a :class:`~ckptkeys.LimitError` naming the
limit, instead of exhausting memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ._repr import call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["Limits"]

MiB: Final = 1 << 20

# data.pkl of a DeepSpeed checkpoint is a few KB to a few MB (it holds names and shapes,
# not tensor bytes); 512 MiB leaves room for state dicts with millions of tensors.
DEFAULT_MAX_PICKLE_BYTES: Final = 512 * MiB
# Objects pushed while reading one pickle: each costs ~100 bytes of memory in the result.
DEFAULT_MAX_OBJECTS: Final = 20_000_000
# Memo entries (shared references): a pickle memoizes at most one entry per object.
DEFAULT_MAX_MEMO: Final = 20_000_000
# Nesting depth of the structure (and of open MARKs). DeepSpeed checkpoints nest under ten
# levels; 200 keeps every recursive consumer (repr, ==, copy, json, hashing a tuple) far from
# Python's recursion limit of 1000 and from the C stack.
DEFAULT_MAX_DEPTH: Final = 200
# One string or bytes object; checkpoints hold names and configs, not blobs.
DEFAULT_MAX_STRING_BYTES: Final = 64 * MiB
# One line of a text opcode (protocol 0 INT, FLOAT, STRING, GLOBAL, ...).
DEFAULT_MAX_LINE_BYTES: Final = 1 * MiB
# Digits of one integer literal (or bytes of a LONG1/LONG4): int() of huge literals is quadratic.
DEFAULT_MAX_INT_DIGITS: Final = 4_300
# Memory the inert structure of one pickle may take, as the machine counts it while reading:
# every object it makes, stack slot, memo entry and container item is charged with CPython's
# size for it (see _pickle), and nothing is given back. The object and memo counts alone let a
# 19 KB deflated pickle of 20M EMPTY_DICT or MEMOIZE opcodes build 1.4 GB in 9-14 s; under this
# limit such a bomb ends within about 3 s and 400 MB (bench/bench_bombs.py --inflate-ratio
# 1000000: max_inflate_ratio refuses each first). Measured: the largest pickle of the test
# fixtures charges 0.14 MB, the ~1 GB ZeRO-2 bench checkpoint's 0.08 MB; a state dict of 30,000
# tensors (a 3.5 MB data.pkl) 64 MB, about 2.1 KB a tensor: 256 MiB is some 120,000 tensors.
DEFAULT_MAX_STRUCTURE_BYTES: Final = 256 * MiB
# How many times its compressed size a deflated data.pkl may inflate to, beyond its first MiB
# (INFLATE_ALLOWANCE, always allowed). torch.save stores data.pkl uncompressed; another writer's
# deflate shrinks a real pickle 2-5 times (4.6 for a state dict of 30,000 tensors). Reading costs
# time by the inflated size: 20M one-byte opcodes deflate to 19-90 KB and took 5-22 s to read.
DEFAULT_MAX_INFLATE_RATIO: Final = 100
INFLATE_ALLOWANCE: Final = 1 * MiB
# Members of one zip archive: one per tensor storage, so a 100k-tensor file has ~100k.
DEFAULT_MAX_ZIP_MEMBERS: Final = 2_000_000


@dataclass(frozen=True, slots=True, repr=False)
class Limits:
    """Bounds on what reading one file may cost; pass ``Limits(max_depth=...)`` to change one.

    Its repr names only the bounds that differ from the defaults (``Limits(max_depth=50)``).
    """

    max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES
    max_objects: int = DEFAULT_MAX_OBJECTS
    max_memo: int = DEFAULT_MAX_MEMO
    max_depth: int = DEFAULT_MAX_DEPTH
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS
    max_zip_members: int = DEFAULT_MAX_ZIP_MEMBERS
    max_structure_bytes: int = DEFAULT_MAX_STRUCTURE_BYTES
    max_inflate_ratio: int = DEFAULT_MAX_INFLATE_RATIO

    def __repr__(self) -> str:
        changed = ((f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) != f.default)
        return call(self, changed)  # at most LINE_CHARS: "..." for the bounds that no longer fit

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Limits.{name} must be a non-negative int, not {value!r}")
