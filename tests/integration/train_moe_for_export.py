"""Train a mixture-of-experts model with DeepSpeed on the CPU and save it.

Run once per rank, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set:
``python train_moe_for_export.py SAVE_DIR EP_SIZE PRECISION [STAGE]``. One dense layer, a
``deepspeed.moe.layer.MoE`` layer of four experts (expert parallel over ``EP_SIZE`` ranks),
a head; ZeRO-2, or ``STAGE``. Used by tests/test_export_deepspeed.py and
tests/test_export_zero0_deepspeed.py (stage 0).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import torch
from deepspeed.moe.layer import MoE
from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer


class Model(torch.nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here (mypy.ini)
    def __init__(self, ep_size: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(16, 6)
        self.moe = MoE(hidden_size=6, expert=torch.nn.Linear(6, 6), num_experts=4, ep_size=ep_size, k=1)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _, _ = self.moe(self.emb(tokens))
        return self.head(hidden)


def main(save_dir: str, ep_size: int, precision: str, stage: int = 2) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = Model(ep_size)
    parameters = split_params_into_different_moe_groups_for_optimizer(
        {"params": list(model.parameters()), "name": "parameters"}
    )
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": precision == "bf16"},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=parameters, config=config)
    torch.manual_seed(1 + int(os.environ.get("RANK", "0")))
    for _ in range(3):
        loss = engine(torch.randint(0, 16, (2, 5))).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(save_dir, tag="step3")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:5]))
