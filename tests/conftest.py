"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "fixtures"
REFERENCE = DATA / "deepspeed-0.19.8-constants.json"


def reference_constants() -> list[dict[str, Any]]:
    """The 96 constants of deepspeed.checkpoint.constants 0.19.8, as recorded from DeepSpeed itself."""
    constants: list[dict[str, Any]] = json.loads(REFERENCE.read_text(encoding="utf-8"))["constants"]
    return constants


def ds_to_universal(tag: pathlib.Path, output: pathlib.Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run DeepSpeed's own ``ds_to_universal`` converter on one tag folder (needs DeepSpeed)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            *("--input_folder", str(tag), "--output_folder", str(output)),
            *("--num_extract_workers", "1", "--num_merge_workers", "1"),
            *options,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, DS_ACCELERATOR="cpu"),
        check=False,
        timeout=600,
    )
