"""Train a tiny model with DeepSpeed on the CPU and save it twice: with and without the info.

Run once per rank, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (as a
launcher would): ``python train_and_save.py SAVE_DIR STAGE PRECISION``. Tag ``with_info``
carries ``universal_checkpoint_info`` built by ``ckptkeys.writing`` in its client state; tag
``without_info`` carries only a note. Used by tests/test_writing_deepspeed.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import torch

from ckptkeys.writing import client_state, universal_checkpoint_info


def main(save_dir: str, stage: int, precision: str) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    # Parameters 0.weight, 0.bias, 2.weight, 2.bias.
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": precision == "bf16"},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for _ in range(3):
        loss = engine(torch.randn(4, 8, dtype=dtype)).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    info = universal_checkpoint_info(
        tp_replicated_parameter_patterns=[r"2\.bias"],
        parameter_with_row_parallelism_patterns=[r"2\.weight"],
    )
    engine.save_checkpoint(save_dir, tag="with_info", client_state=client_state(info, my_note="integration"))
    engine.save_checkpoint(save_dir, tag="without_info", client_state={"my_note": "integration"})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
