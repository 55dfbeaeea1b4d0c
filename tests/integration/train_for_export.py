"""Train a model with tied, frozen and odd-sized parameters with DeepSpeed on the CPU, and save it.

Run once per rank, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set:
``python train_for_export.py SAVE_DIR STAGE PRECISION [SUB_GROUP_SIZE]``. The model (``build_model``) has a
buffer, a frozen layer, an embedding tied to the output layer (``shared_params``), and sizes
that are no multiple of the data-parallel degree, so partitions carry padding. ZeRO-3's
``sub_group_size``, when given, splits its flat partitions into several groups. Used by
tests/test_export_deepspeed.py and scripts/make_universal_z3_ws3_fixture.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch


class Tied(torch.nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here (mypy.ini)
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(13, 7)
        self.fc1 = torch.nn.Linear(7, 11)
        self.frozen = torch.nn.Linear(11, 7)
        self.head = torch.nn.Linear(7, 13, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 7))
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        x = self.frozen(torch.relu(self.fc1(x))) * self.scale.to(x.dtype)
        return self.head(x)


def build_model() -> Tied:
    torch.manual_seed(0)
    return Tied()


def main(save_dir: str, stage: int, precision: str, sub_group_size: int | None = None) -> None:
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    model = build_model()
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": stage} | ({} if sub_group_size is None else {"sub_group_size": sub_group_size}),
        "bf16": {"enabled": precision == "bf16"},
    }
    parameters = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=parameters, config=config)
    torch.manual_seed(1 + int(os.environ.get("RANK", "0")))
    for _ in range(3):
        loss = engine(torch.randint(0, 13, (2, 5))).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(save_dir, tag="step3")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:5]))
