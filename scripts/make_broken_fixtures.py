"""Write tests/data/broken/: copies of real fixtures with one thing changed each (needs torch and DeepSpeed).

Each case is a save folder the validator must flag with one specific problem code. Edits that
need no torch (deleting a rank, truncating a file, renaming a shard, rewriting `latest`) are
made by the tests themselves; this script makes the ones that change a pickled value.
Run on Python 3.11 with torch 2.13.0 and DeepSpeed 0.19.8: python scripts/make_broken_fixtures.py
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch
from deepspeed.runtime.zero.config import ZeroStageEnum

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "fixtures"
OUT = ROOT / "tests" / "data" / "broken"


def edit(case: str, source: str, file_glob: str, change: Callable[[pathlib.Path, dict[str, Any]], None]) -> None:
    target = OUT / case
    shutil.copytree(FIXTURES / source, target)
    files = sorted(target.glob(f"*/{file_glob}"))
    assert files, (case, file_glob)
    for path in files:
        state = torch.load(path, weights_only=False)
        change(path, state)
        torch.save(state, path)
    print(f"wrote {target.relative_to(ROOT)} ({len(files)} files changed)")


def drop_zero_stage(path: pathlib.Path, state: dict[str, Any]) -> None:
    del state["optimizer_state_dict"]["zero_stage"]


def wrong_partition_count(path: pathlib.Path, state: dict[str, Any]) -> None:
    state["optimizer_state_dict"]["partition_count"] = [3]


def stage_one_on_rank_one(path: pathlib.Path, state: dict[str, Any]) -> None:
    if "zero_pp_rank_1_" in path.name:
        state["optimizer_state_dict"]["zero_stage"] = ZeroStageEnum.optimizer_states


def wrong_dp_world_size(path: pathlib.Path, state: dict[str, Any]) -> None:
    state["dp_world_size"] = 4


def wrong_mp_world_size(path: pathlib.Path, state: dict[str, Any]) -> None:
    state["mp_world_size"] = 3


def extra_param_shape(path: pathlib.Path, state: dict[str, Any]) -> None:
    state["param_shapes"][0]["extra.weight"] = torch.Size([10, 10])


def wrong_ds_version_type(path: pathlib.Path, state: dict[str, Any]) -> None:
    state["ds_version"] = 19


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    edit("no_zero_stage", "z2_bf16_ws2", "*optim_states.pt", drop_zero_stage)
    edit("partition_count", "z2_bf16_ws2", "*optim_states.pt", wrong_partition_count)
    edit("stage_mismatch", "z2_bf16_ws2", "*optim_states.pt", stage_one_on_rank_one)
    edit("dp_world_size", "z2_bf16_ws2", "mp_rank_00_model_states.pt", wrong_dp_world_size)
    edit("mp_world_size", "tp2_z1_bf16", "mp_rank_*_model_states.pt", wrong_mp_world_size)
    edit("param_shapes", "z2_bf16_ws2", "mp_rank_00_model_states.pt", extra_param_shape)
    edit("wrong_type", "z2_bf16_ws2", "mp_rank_00_model_states.pt", wrong_ds_version_type)


if __name__ == "__main__":
    main()
