"""The export casts are bit-identical with torch's ``.to(dtype)`` (needs torch and numpy).

Every 16-bit pattern (all bfloat16 and float16 values, NaNs, infinities, subnormals) and a
million random float32 patterns plus the rounding boundaries of both 16-bit formats.
"""

from __future__ import annotations

import pytest

from ckptkeys._export._cast import cast_bytes

pytestmark = pytest.mark.deepspeed
torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _patterns(source: str) -> bytes:
    if source != "float32":
        return bytes(np.arange(65536, dtype="<u2").tobytes())
    rng = np.random.default_rng(15)
    parts = [
        rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32),
        np.arange(0, 2**20, dtype=np.uint32) << 12,  # every sign/exponent/top-mantissa combination
        np.arange(0x7F7F0000, 0x7F810000, dtype=np.uint32),  # around the largest finite and infinity
        np.arange(0x33000000, 0x33900000, 7, dtype=np.uint32),  # float16 subnormal rounding
        np.arange(0x38700000, 0x38900000, 3, dtype=np.uint32),  # float16 normal/subnormal boundary
        np.arange(0x7F800000, 0x80000000, 4099, dtype=np.uint32),  # NaN payloads
        np.arange(0xFF800000, 0xFFFFFFFF, 4099, dtype=np.uint32),  # negative NaN payloads
    ]
    return bytes(np.concatenate(parts).astype("<u4").tobytes())


@pytest.mark.parametrize("source", list(TORCH))
@pytest.mark.parametrize("target", list(TORCH))
def test_cast_is_bit_identical_with_torch(source: str, target: str) -> None:
    data = _patterns(source)
    tensor = torch.frombuffer(bytearray(data), dtype=TORCH[source])
    expected = tensor.to(TORCH[target]).contiguous().view(torch.uint8).numpy().tobytes()
    assert bytes(cast_bytes(data, source, target)) == expected


def test_cast_is_bit_identical_in_any_chunking() -> None:
    """export casts one chunk at a time: the result must not depend on where chunks split."""
    data = _patterns("float32")
    whole = bytes(cast_bytes(data, "float32", "bfloat16"))
    pieces = b"".join(cast_bytes(data[i : i + 4 * 997], "float32", "bfloat16") for i in range(0, len(data), 4 * 997))
    assert pieces == whole
