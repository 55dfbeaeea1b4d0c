"""Float casts between float32, bfloat16 and float16, bit-identical with torch's ``.to(dtype)``.

bfloat16 -> float32 needs nothing but Python: a bfloat16 is the top half of the float32 of the
same value, so the cast puts each element's two bytes after two zero bytes (slice assignment on a
bytearray, in C), exactly as torch's ``c10::BFloat16`` conversion shifts the bits (NaN payloads
and signalling bits kept). Every other cast needs numpy (``pip install numpy``; from a checkout
of ckptkeys, the ``.[export]`` extra), which does the arithmetic one bounded chunk at a time and
is imported only when such a cast is needed. Rounding is to nearest, ties to even. NaNs
follow torch's CPU kernels, measured on torch 2.13 (tests/test_cast.py checks every 16-bit
pattern and a million float32 ones): float32 -> bfloat16 gives ``0xFFFF`` for every NaN (ATen's
vectorised kernel), float16 -> bfloat16 gives ``0x7FC0`` (c10's scalar conversion); float32 ->
float16 keeps the sign and the top ten payload bits and sets the quiet bit (``sign | 0x7E00 |
payload >> 13``, as the F16C instruction does); float16 -> float32 sets the quiet bit too.
"""

from __future__ import annotations

import sys

from ._types import FLOATS, TORCH_NAMES, ExportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

    from ._types import ExportTensor

__all__ = [
    "FLOAT_DTYPES",
    "INSTALL_NUMPY",
    "NumpyMissingError",
    "Way",
    "cast_bytes",
    "check_numpy",
    "dtypes_without_numpy",
    "needs_numpy",
    "numpy_available",
    "numpy_need",
    "require_numpy",
]

FLOAT_DTYPES: Final = frozenset({"float32", "bfloat16", "float16", "float64"})
# The casts done without numpy (source, target): exact byte moves.
_WITHOUT_NUMPY: Final = frozenset({("bfloat16", "float32")})
# How to get numpy: ckptkeys is not on the package index, so the extra is a checkout's.
INSTALL_NUMPY: Final = "pip install numpy (from a checkout of ckptkeys: pip install '.[export]')"


def needs_numpy(source: str, target: str) -> bool:
    """Whether casting ``source`` elements to ``target`` needs numpy."""
    return source != target and (source, target) not in _WITHOUT_NUMPY


def require_numpy() -> Any:
    """numpy, or an ``ImportError`` saying how to install it."""
    try:
        import numpy
    except ImportError:
        raise ImportError(f"casting tensors needs numpy, which is not installed: {INSTALL_NUMPY}") from None
    return numpy


Way = tuple[tuple[str, str], ...]
"""Arguments of :func:`~ckptkeys.plan_export` and their values (``(("weights", "module"), ("dtype", "auto"))``)."""


class NumpyMissingError(ExportError):
    """An export that needs numpy, which is not installed: refused before anything is written.

    :attr:`needs` says what needs it and how to install numpy; :attr:`ways` are the arguments
    (keyword, value) that, changed from those given, make an export of this very checkpoint that
    needs no numpy (each tried by planning it), fewest changes first; none where nothing does.
    ``option`` is the keyword of the first way's first argument, else ``None``.
    """

    def __init__(self, path: str, needs: str, ways: Sequence[Way] = ()) -> None:
        spelled = " or ".join(" and ".join(f"{key} {value}" for key, value in way) for way in ways)
        reason = needs + (f"; or export with {spelled}, which needs no numpy for this checkpoint" if ways else "")
        super().__init__(path, reason, option=ways[0][0][0] if ways else None)
        self.needs = needs
        self.ways: tuple[Way, ...] = tuple(ways)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.needs, self.ways))


def numpy_available() -> bool:
    """Whether numpy can be imported, without importing it."""
    if sys.modules.get("numpy") is not None:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        return False


def numpy_need(tensors: Sequence[ExportTensor]) -> str | None:
    """What writing ``tensors`` needs numpy for (``"casting 'w' from float16 to float32"``), or ``None``."""
    mean = next((t for t in tensors if t.mean_of), None)
    if mean is not None:
        return f"averaging the tensor-parallel slices of {mean.name!r}"
    cast = next((t for t in tensors if needs_numpy(t.source_dtype, t.dtype)), None)
    if cast is not None:
        return f"casting {cast.name!r} from {cast.source_dtype} to {cast.dtype}"
    return None


def dtypes_without_numpy(tensors: Sequence[ExportTensor]) -> list[str]:
    """The explicit ``dtype`` arguments (``"fp32"``, ``"bf16"``, ``"fp16"``; ``"auto"`` is one of
    them) whose export of ``tensors`` (as planned, whatever their output dtype) needs no numpy."""
    if any(t.mean_of for t in tensors):
        return []
    floats = {t.source_dtype for t in tensors if t.source_dtype in FLOATS}
    return [name for name, torch_name in TORCH_NAMES.items() if not any(needs_numpy(f, torch_name) for f in floats)]


def check_numpy(checkpoint: str, tensors: Sequence[ExportTensor]) -> None:
    """Import numpy if writing ``tensors`` casts (numpy is faster where it is installed); if it is
    not installed and a cast needs it, a :class:`NumpyMissingError` before anything is written,
    naming the cast, how to install numpy, and the output dtypes that would need no numpy for
    these tensors. (:func:`~ckptkeys.plan_export` refuses such a plan first, with every way out.)"""
    if all(t.dtype == t.source_dtype and not t.mean_of for t in tensors):
        return
    try:
        import numpy  # noqa: F401  # imported once here: cast_bytes then uses it for every cast
    except ImportError:
        pass
    else:
        return
    need = numpy_need(tensors)
    if need is None:
        return  # only casts done without numpy
    ways = [(("dtype", d),) for d in dtypes_without_numpy(tensors)]
    raise NumpyMissingError(checkpoint, f"{need} needs numpy, which is not installed: {INSTALL_NUMPY}", ways)


def _bfloat16_to_float32(data: bytes | bytearray | memoryview) -> memoryview:
    """bfloat16 bits followed by 16 zero bits, element by element (little-endian both)."""
    # Slices of bytes, not of a memoryview: a strided memoryview is copied element by element
    # (0.2 GB/s against 0.35 GB/s with the copy to bytes, 256 KiB chunks on the bench machine).
    source = bytes(data)
    out = bytearray(2 * len(source))
    out[2::4] = source[0::2]
    out[3::4] = source[1::2]
    return memoryview(out)


def _to_float32(data: bytes | bytearray | memoryview, source: str) -> Any:
    np = require_numpy()
    if source == "float32":
        return np.frombuffer(data, dtype="<f4")
    if source == "bfloat16":
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if source == "float16":
        values = np.frombuffer(data, dtype="<f2").astype(np.float32)
        bits = values.view(np.uint32)
        bits[np.isnan(values)] |= np.uint32(0x00400000)  # torch quiets signalling NaNs
        return values
    if source == "float64":
        with np.errstate(over="ignore"):
            return np.frombuffer(data, dtype="<f8").astype(np.float32)
    raise ValueError(f"no cast from {source}")


def cast_bytes(data: bytes | bytearray | memoryview, source: str, target: str) -> memoryview:
    """``data`` (little-endian elements of ``source``) cast to ``target``, as a byte view.

    The view is of a new array, never of ``data`` (unless no cast is asked for).
    """
    if source == target:
        return memoryview(data).cast("B")
    if (source, target) in _WITHOUT_NUMPY and sys.modules.get("numpy") is None:  # check_numpy imports it
        return _bfloat16_to_float32(data)
    np = require_numpy()
    if target == "float64":
        return _bytes(_to_float32(data, source).astype("<f8"))
    values = _to_float32(data, source)
    if target == "float32":
        return _bytes(values.astype("<f4", copy=True))
    bits = values.view(np.uint32)
    nan = np.isnan(values)
    if target == "bfloat16":
        # Round to nearest even on the integer bits: add 0x7FFF plus the lowest kept bit, in place.
        rounded = bits >> np.uint32(16)
        rounded &= np.uint32(1)
        rounded += np.uint32(0x7FFF)
        rounded += bits
        rounded >>= np.uint32(16)
        out = rounded.astype("<u2")
        if nan.any():
            out[nan] = 0x7FC0 if source == "float16" else 0xFFFF
        return _bytes(out)
    if target == "float16":
        with np.errstate(over="ignore", invalid="ignore"):
            half = values.astype("<f2").view("<u2")
        if nan.any():
            sign = (bits[nan] >> np.uint32(16)) & np.uint32(0x8000)
            payload = (bits[nan] & np.uint32(0x7FFFFF)) >> np.uint32(13)
            half[nan] = (sign | np.uint32(0x7E00) | payload).astype("<u2")
        return _bytes(half)
    raise ValueError(f"no cast to {target}")


def _bytes(array: Any) -> memoryview:
    view: memoryview = array.data
    return view.cast("B")
