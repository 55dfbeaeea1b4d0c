"""Write the small torch files under tests/data/torch/ (needs torch; run on Python 3.11 here).

The files cover what DeepSpeed's fixtures do not: torch's legacy (pre-1.6) format, dtypes
without a legacy storage class (float8, uint16), meta tensors, a Parameter, shared storages
and views, torch.Size, and big-endian-free plain containers. The reader's tests use them
without torch; the cross-check test compares them with torch.load where torch is installed.
"""

from __future__ import annotations

import collections
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "torch"


def sample() -> dict[str, object]:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = collections.OrderedDict(
        [("weight", torch.ones(2, 3, dtype=torch.bfloat16)), ("bias", torch.zeros(3, dtype=torch.float16))]
    )
    return {
        "tensors": {
            "base": base,
            "view": base[1:, 2:],  # offset and strides into a shared storage
            "transposed": base.t(),
            "scalar": torch.tensor(3.5, dtype=torch.float64),
            "int64": torch.tensor([1, 2, 3]),
            "bool": torch.tensor([True, False]),
            "empty": torch.empty(0, 5),
            "complex": torch.tensor([1 + 2j], dtype=torch.complex64),
        },
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "state_dict": state,
        "size": torch.Size([4, 5]),
        "dtype": torch.bfloat16,
        "nested": [1, 2.5, "three", b"four", None, True, (5, (6, 7)), {8, 9}, frozenset({10})],
        "big_int": 2**100,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = sample()
    torch.save(data, OUT / "sample_zip.pt")
    torch.save(data, OUT / "sample_legacy.pt", _use_new_zipfile_serialization=False)
    modern = {
        "float8": torch.zeros(4, dtype=torch.float8_e4m3fn),
        "uint16": torch.zeros(3, dtype=torch.uint16),
        "meta": torch.empty(2, 3, device="meta"),
    }
    torch.save(modern, OUT / "modern_dtypes.pt")
    for path in sorted(OUT.iterdir()):
        print(f"wrote {path.relative_to(OUT.parent.parent.parent)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
