"""Train with DeepSpeed on the CPU, save; or resume from universal checkpoints and train on.

Run once per rank, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set:

- ``python train_universal.py train SAVE_ROOT CONFIG...``: for each CONFIG, build the model,
  train three steps, save the tag ``step3`` with ``universal_checkpoint_info`` in the client
  state into ``SAVE_ROOT/CONFIG``.
- ``python train_universal.py resume OUT CONFIG=LOAD_DIR,LOAD_DIR...``: for each ``LOAD_DIR``
  in turn (a folder holding ``latest_universal``), from the same seeds: build the model
  (initialised differently from the trained one), ``deepspeed.initialize`` with
  ``"checkpoint": {"load_universal": true}``, ``load_checkpoint(LOAD_DIR)``, train three more
  steps; each rank saves ``OUT/CONFIG/<index>-rank<rank>.pt``: the global step, every trainable
  parameter's fp32 master and Adam moments (whole, gathered from the partitions) right after
  the load and after training, and the losses of the three steps.

Several configurations run in one job (one engine after the other), as starting DeepSpeed's
processes costs more than training this model.
CONFIG: ``z1`` (ZeRO-1, fp32), ``z2`` (ZeRO-2, bf16), ``z3`` (ZeRO-3, bf16), ``tp<N>`` (ZeRO-1,
bf16, BF16 optimizer; tensor parallel of degree N through a Megatron-style ``mpu``, data
parallel of WORLD_SIZE / N; its parameters are split, padded, fused, replicated and averaged
as ``universal_checkpoint_info`` says). Layer sizes are no multiple of the data-parallel
degrees (1, 2, 4), so partitions carry padding. Used by tests/test_universal_resume.py.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

from ckptkeys.writing import client_state, universal_checkpoint_info

STEPS = 3
VOCAB = 13  # the vocabulary-parallel embedding's rows, padded to a multiple of 8 rows per rank


class Net(torch.nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here (mypy.ini)
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(7, 11)
        self.fc2 = torch.nn.Linear(11, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class Mpu:
    """Tensor parallel of degree ``tp`` over consecutive ranks; data parallel across them."""

    def __init__(self, tp: int) -> None:
        rank, world = int(dist.get_rank()), int(dist.get_world_size())
        self.tp, self.dp = tp, world // tp
        self.tp_rank, self.dp_rank = rank % tp, rank // tp
        # Every rank makes every group, in the same order (new_group is collective).
        tp_groups = [dist.new_group([d * tp + t for t in range(tp)]) for d in range(self.dp)]
        dp_ranks = [[d * tp + t for d in range(self.dp)] for t in range(tp)]
        dp_groups = [dist.new_group(ranks) for ranks in dp_ranks]
        self.tp_group, self.dp_group = tp_groups[self.dp_rank], dp_groups[self.tp_rank]
        self.dp_ranks = dp_ranks[self.tp_rank]

    def get_model_parallel_rank(self) -> int:
        return self.tp_rank

    def get_model_parallel_world_size(self) -> int:
        return self.tp

    def get_model_parallel_group(self) -> object:
        return self.tp_group

    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.dp_rank * self.tp

    def get_data_parallel_rank(self) -> int:
        return self.dp_rank

    def get_data_parallel_world_size(self) -> int:
        return self.dp

    def get_data_parallel_group(self) -> object:
        return self.dp_group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return self.dp_ranks


class Shard(torch.nn.Module):  # type: ignore[misc]
    """One tensor-parallel rank's shard (``tp_rank`` of ``tp``)."""

    def __init__(self, mpu: Mpu) -> None:
        super().__init__()
        tp = mpu.tp
        g = torch.Generator().manual_seed(100 + mpu.tp_rank)
        self.embed = torch.nn.Parameter(torch.randn(16 // tp, 6, generator=g))  # 13 rows + padding
        self.column = torch.nn.Parameter(torch.randn(10 // tp, 6, generator=g))
        self.row = torch.nn.Parameter(torch.randn(6, 8 // tp, generator=g))
        self.fused = torch.nn.Parameter(torch.randn(12 // tp, 6, generator=g))  # [a_r; b_r], 6 // tp rows each
        self.bias = torch.nn.Parameter(torch.linspace(-1, 1, 6))  # replicated over the tp group
        self.norm = torch.nn.Parameter(torch.randn(6, generator=g))  # averaged on conversion
        self.bias.register_hook(lambda grad: _tp_average(grad, mpu))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.embed.t() @ self.embed + self.bias + self.norm
        wide = torch.cat([h, h], dim=1)[:, : self.row.shape[1]]  # the row-parallel input: 8 // tp columns
        return (h @ self.column.t()).sum() + (wide @ self.row.t()).sum() + (h @ self.fused.t()).sum()


def _tp_average(grad: torch.Tensor, mpu: Mpu) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad, group=mpu.tp_group)
    return grad / mpu.tp


def _setup(name: str, resume: bool, seed: int) -> tuple[Any, Mpu | None, bool]:
    tp = int(name[2:]) if name.startswith("tp") else 0
    stage, bf16 = {"z1": (1, False), "z2": (2, True), "z3": (3, True)}.get(name, (1, True))
    mpu = Mpu(tp) if tp else None
    torch.manual_seed(seed)
    model = Shard(mpu) if mpu is not None else Net()
    if mpu is not None and seed:  # a resumed model starts elsewhere, so the load has to move it
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": bf16},
        "checkpoint": {"load_universal": resume},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config, mpu=mpu)
    return engine, mpu, bf16


def _batch(step: int, dp_rank: int, tp: bool, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + dp_rank)
    x = torch.randn(2, 6 if tp else 7, generator=g)
    return x.to(torch.bfloat16) if bf16 else x, torch.randn(2, 5, generator=g)


def _train(engine: Any, mpu: Mpu | None, bf16: bool, steps: int) -> list[torch.Tensor]:
    dp_rank = mpu.dp_rank if mpu is not None else int(dist.get_rank())
    losses = []
    for _ in range(steps):
        x, target = _batch(engine.global_steps, dp_rank, mpu is not None, bf16)
        out = engine(x).float()
        loss = out.pow(2).mean() if mpu is not None else (out - target).pow(2).mean()
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach().clone())
    return losses


def _state(engine: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Every trainable parameter's fp32 master and Adam moments, whole (all ranks call it: ZeRO-3 gathers)."""
    state = {}
    for name, param in engine.module.named_parameters():
        state[name] = {"fp32": safe_get_full_fp32_param(param).clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            state[name][key] = safe_get_full_optimizer_state(param, key).clone()
    return state


def train(save_dir: str, name: str) -> None:
    engine, mpu, bf16 = _setup(name, resume=False, seed=0)
    _train(engine, mpu, bf16, STEPS)
    if mpu is not None:
        info = universal_checkpoint_info(
            original_vocab_size=VOCAB,
            vocabulary_parameter_patterns=[r"embed$"],
            tp_replicated_parameter_patterns=[r"bias$"],
            parameter_to_average_patterns=[r"norm$"],
            parameter_with_row_parallelism_patterns=[r"row$"],
            parameter_with_2_sub_params_cat_dim_0=[r"fused$"],
        )
    else:
        info = universal_checkpoint_info()
    engine.save_checkpoint(save_dir, tag=f"step{STEPS}", client_state=client_state(info))
    engine.destroy()
    dist.barrier()


def resume(out: str, name: str, folders: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    for index, folder in enumerate(folders):
        engine, mpu, bf16 = _setup(name, resume=True, seed=12345)
        engine.load_checkpoint(folder)
        loaded = {"global_steps": engine.global_steps, "state": _state(engine)}
        losses = _train(engine, mpu, bf16, STEPS)
        result = {"loaded": loaded, "losses": torch.stack(losses), "final": _state(engine)}
        torch.save(result, os.path.join(out, f"{index}-rank{dist.get_rank()}.pt"))
        engine.destroy()
        dist.barrier()


def main(argv: list[str]) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    if argv[0] == "train":
        for name in argv[2:]:
            train(os.path.join(argv[1], name), name)
    else:
        for job in argv[2:]:
            name, _, folders = job.partition("=")
            resume(os.path.join(argv[1], name), name, folders.split(","))


if __name__ == "__main__":
    main(sys.argv[1:])
