"""Train a model without ZeRO (stage 0) in fp16 or bf16 with DeepSpeed on the CPU, and save it.

Run with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (one rank):
``python train_zero0.py SAVE_DIR PRECISION``. DeepSpeed wraps the torch optimizer in
``FP16_UnfusedOptimizer`` (fp16, and bf16 as ``DDP_BFLOAT16``), which saves the fp32 masters as
``fp32_groups`` with no names. The model makes matching them hard: a frozen layer shaped like
the trained one after it (``twin`` before ``fc``), a frozen copy of a layer trained with learning
rate 0 (``still_twin`` before ``still``: equal values, master and module alike), an embedding
tied to the output layer, a buffer, and param groups in another order than the module's (biases
first). Beside the checkpoint, ``masters.pt`` holds every trained parameter's master by name,
taken from the engine's optimizer before the save. Used by tests/test_export_zero0_deepspeed.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch


class Twins(torch.nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here (mypy.ini)
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(13, 8)
        self.twin = torch.nn.Linear(8, 8)  # frozen, fc's shape, before it
        self.fc = torch.nn.Linear(8, 8)
        self.still_twin = torch.nn.Linear(8, 8)  # frozen, still's values
        self.still = torch.nn.Linear(8, 8)  # trained at learning rate 0: its master stays its module value
        self.head = torch.nn.Linear(8, 13, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8))
        with torch.no_grad():
            self.twin.weight.copy_(self.fc.weight)  # equal before training, apart after
            self.still_twin.load_state_dict(self.still.state_dict())
        for p in [*self.twin.parameters(), *self.still_twin.parameters()]:
            p.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        x = torch.relu(self.fc(x)) + self.twin(x) * self.scale.to(x.dtype)
        x = self.still(x) + self.still_twin(x)
        return self.head(x)


def main(save_dir: str, precision: str) -> None:
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    type(get_accelerator()).is_fp16_supported = lambda self: True  # the CPU accelerator says no (fixtures/README.md)
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = Twins()
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": 0},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 8},
        "bf16": {"enabled": precision == "bf16"},
    }
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        {"params": [model.fc.bias]},
        {"params": [model.emb.weight, model.fc.weight]},
        {"params": [model.still.weight, model.still.bias], "lr": 0.0},
    ]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    wrapper = type(engine.optimizer).__name__
    assert wrapper == "FP16_UnfusedOptimizer", wrapper
    torch.manual_seed(1)
    for _ in range(4):
        loss = engine(torch.randint(0, 13, (2, 5))).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    masters = {
        names[id(low)]: master.detach().clone()
        for low_group, master_group in zip(engine.optimizer.fp16_groups, engine.optimizer.fp32_groups, strict=True)
        for low, master in zip(low_group, master_group, strict=True)
    }
    engine.save_checkpoint(save_dir, tag="step4")
    torch.save(masters, os.path.join(save_dir, "masters.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
