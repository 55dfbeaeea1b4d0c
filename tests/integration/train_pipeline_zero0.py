"""Train a two-stage pipeline without ZeRO (stage 0) in bf16 with DeepSpeed on the CPU, and save it.

Run as two ranks, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set:
``python train_pipeline_zero0.py SAVE_DIR``. A bf16 pipeline at stage 0 gets ``BF16_Optimizer``,
which writes ``bf16_zero_pp_rank_*_optim_states.pt`` shards, while the model states hold no
``param_shapes`` (DeepSpeed saves them only under ZeRO). Used by tests/test_export_zero0_deepspeed.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch


def _loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out.float() - target.float()).pow(2).mean()


def main(save_dir: str) -> None:
    import deepspeed
    from deepspeed.pipe import PipelineModule

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)]
    model = PipelineModule(layers=layers, num_stages=2, loss_fn=_loss)
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": 0},
        "bf16": {"enabled": True},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=config)
    wrapper = type(engine.optimizer).__name__
    assert wrapper == "BF16_Optimizer", wrapper

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield torch.randn(2, 8).to(torch.bfloat16), torch.randn(2, 4).to(torch.bfloat16)

    data = batches()
    for _ in range(3):
        engine.train_batch(data)
    engine.save_checkpoint(save_dir, tag="step3")


if __name__ == "__main__":
    main(sys.argv[1])
