"""Write tests/data/universal_z3_tp2/: a tensor-parallel ZeRO-3 save (tp 2) and ds_to_universal's output for it.

DeepSpeed 0.19.8 trains tests/integration/train_tp_for_export.py's sharded model (a Megatron-style
``mpu``: a vocabulary-parallel embedding, column- and row-parallel weights, a fused two-part
weight, a replicated bias, an averaged parameter; ``universal_checkpoint_info`` naming them) at
ZeRO-3, bf16, on 2 ranks (tensor parallel 2, data parallel 1), and saves tag ``step3``
(``latest``). ``ds_to_universal`` then merges the ranks into ``step3_universal`` and writes
``latest_universal`` beside it, as in a save folder. Nothing is edited; DeepSpeed's copies of its
recovery scripts (``zero_to_fp32.py``, ``zero_to_torch.py``) are removed.
Run on Python 3.11 with DeepSpeed 0.19.8 from the repository root:
``python scripts/make_universal_z3_tp2_fixture.py``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import launch_ranks  # noqa: E402  # after the path is set

SCRIPT = ROOT / "tests" / "integration" / "train_tp_for_export.py"
OUT = ROOT / "tests" / "data" / "universal_z3_tp2"
WORLD = 2
RECOVERY_SCRIPTS = ("zero_to_fp32.py", "zero_to_torch.py")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    launch_ranks([sys.executable, str(SCRIPT), str(OUT), "3"], WORLD, output=OUT)
    for script in RECOVERY_SCRIPTS:  # DeepSpeed's copies of its converters: not checkpoint data
        (OUT / script).unlink()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            *("--input_folder", str(OUT / "step3"), "--output_folder", str(OUT / "step3_universal")),
            *("--num_extract_workers", "1", "--num_merge_workers", "1"),
        ],
        env=dict(os.environ, DS_ACCELERATOR="cpu"),
        check=True,
    )
    for path in sorted(OUT.rglob("*")):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size if path.is_file() else ''}")


if __name__ == "__main__":
    main()
