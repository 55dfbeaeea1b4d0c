"""Float casts between float32, bfloat16 and float16, bit-identical with torch's ``.to(dtype)``.

numpy (the optional ``ckptkeys[export]`` extra) does the arithmetic, one bounded chunk at a
time, and is imported only when a cast is needed. Rounding is to nearest, ties to even. NaNs
follow torch's CPU kernels, measured on torch 2.13 (tests/test_cast.py checks every 16-bit
pattern and a million float32 ones): float32 -> bfloat16 gives ``0xFFFF`` for every NaN (ATen's
vectorised kernel), float16 -> bfloat16 gives ``0x7FC0`` (c10's scalar conversion); float32 ->
float16 keeps the sign and the top ten payload bits and sets the quiet bit (``sign | 0x7E00 |
payload >> 13``, as the F16C instruction does); float16 -> float32 sets the quiet bit too.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["FLOAT_DTYPES", "cast_bytes", "require_numpy"]

FLOAT_DTYPES: Final = frozenset({"float32", "bfloat16", "float16", "float64"})


def require_numpy() -> Any:
    """numpy, or an ``ImportError`` saying how to install it."""
    try:
        import numpy
    except ImportError:
        raise ImportError(
            "casting tensors needs numpy: pip install 'ckptkeys[export]' (or export without a cast: --dtype auto)"
        ) from None
    return numpy


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
