"""Write tests/data/universal_z3/: DeepSpeed's ds_to_universal output for a ZeRO-3 checkpoint (needs DeepSpeed).

ZeRO-3's universal conversion keeps the first rank's optimizer state whole in
``zero/optimizer_state.pt`` (with ``optimizer_state_dict`` and ``fp32_flat_groups``), unlike
ZeRO-1/2's. The input is tests/data/fixtures/z3_bf16_ws2/global_step3; the output goes to
``universal_z3/global_step3_universal``, and DeepSpeed writes ``universal_z3/latest_universal``
beside it, as in a save folder. Nothing is edited.
Run on Python 3.11 with DeepSpeed 0.19.8 from the repository root:
``python scripts/make_universal_z3_fixture.py``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "fixtures" / "z3_bf16_ws2" / "global_step3"
OUT = ROOT / "tests" / "data" / "universal_z3"


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            *("--input_folder", str(SOURCE), "--output_folder", str(OUT / "global_step3_universal")),
            *("--num_extract_workers", "1", "--num_merge_workers", "1"),
        ],
        env=dict(os.environ, DS_ACCELERATOR="cpu"),
        check=True,
    )
    for path in sorted(OUT.rglob("*")):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size if path.is_file() else ''}")


if __name__ == "__main__":
    main()
