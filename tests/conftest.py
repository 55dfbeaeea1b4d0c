"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import json
import pathlib
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "fixtures"
REFERENCE = DATA / "deepspeed-0.19.8-constants.json"


def reference_constants() -> list[dict[str, Any]]:
    """The 96 constants of deepspeed.checkpoint.constants 0.19.8, as recorded from DeepSpeed itself."""
    constants: list[dict[str, Any]] = json.loads(REFERENCE.read_text(encoding="utf-8"))["constants"]
    return constants
