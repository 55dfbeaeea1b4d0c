"""Train a tensor-parallel model (two ranks, tp 2) with DeepSpeed on the CPU, with universal info.

Run once per rank, with RANK, LOCAL_RANK, WORLD_SIZE=2, MASTER_ADDR and MASTER_PORT set:
``python train_tp_for_export.py SAVE_DIR [STAGE]`` (ZeRO stage, 1 by default). A Megatron-style ``mpu`` makes both ranks one
tensor-parallel group. Each rank holds its shard of: a vocabulary-parallel embedding (rows
split, padded past the original vocabulary), a column-parallel weight (rows split), a
row-parallel weight (columns split), a fused two-part weight (each rank ``[a_r; b_r]``), a
replicated bias (its gradient averaged over the group, as Megatron does), and a parameter
averaged on conversion. ``universal_checkpoint_info`` from ``ckptkeys.writing`` names them.
Used by tests/test_export_deepspeed.py, which compares ``ckptkeys export`` with
``ds_to_universal``'s merged ``fp32.pt`` files, and (at ZeRO-3) by
scripts/make_universal_z3_tp2_fixture.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import torch
import torch.distributed as dist

from ckptkeys.writing import client_state, universal_checkpoint_info

VOCAB, PADDED = 13, 16  # 16 rows over two ranks, the last 3 padding


class Mpu:
    """Tensor parallel over every rank; data parallel of one."""

    def __init__(self) -> None:
        self.rank: int = int(dist.get_rank())
        self.world: int = int(dist.get_world_size())
        self.tp = dist.new_group(list(range(self.world)))
        self.dp = [dist.new_group([r]) for r in range(self.world)][self.rank]

    def get_model_parallel_rank(self) -> int:
        return self.rank

    def get_model_parallel_world_size(self) -> int:
        return self.world

    def get_model_parallel_group(self) -> object:
        return self.tp

    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group

    def get_tensor_model_parallel_src_rank(self) -> int:
        return 0

    def get_data_parallel_rank(self) -> int:
        return 0

    def get_data_parallel_world_size(self) -> int:
        return 1

    def get_data_parallel_group(self) -> object:
        return self.dp

    def get_data_parallel_group_ranks(self) -> list[int]:
        return [self.rank]


class Shard(torch.nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here (mypy.ini)
    def __init__(self, rank: int, world: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(100 + rank)
        self.embed = torch.nn.Parameter(torch.randn(PADDED // world, 6, generator=g))
        self.column = torch.nn.Parameter(torch.randn(10 // world, 6, generator=g))
        self.row = torch.nn.Parameter(torch.randn(6, 8 // world, generator=g))
        self.fused = torch.nn.Parameter(torch.randn(2 * 3, 6, generator=g))  # [a_r (3 rows); b_r (3 rows)]
        self.bias = torch.nn.Parameter(torch.linspace(-1, 1, 6))  # replicated: the same on every rank
        self.norm = torch.nn.Parameter(torch.randn(6, generator=g))  # averaged on conversion
        self.bias.register_hook(lambda grad: _average(grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.embed.t() @ self.embed + self.bias + self.norm
        y = (h @ self.column.t()).sum() + (h[:, : self.row.shape[1]] @ self.row.t()).sum() + (h @ self.fused.t()).sum()
        return y


def _average(grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def main(save_dir: str, stage: int = 1) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    mpu = Mpu()
    model = Shard(mpu.rank, mpu.world)
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": True},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config, mpu=mpu)
    torch.manual_seed(7)  # the same input on every rank
    for _ in range(3):
        loss = engine(torch.randn(2, 6, dtype=torch.bfloat16)).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    info = universal_checkpoint_info(
        original_vocab_size=VOCAB,
        vocabulary_parameter_patterns=[r"embed$"],
        tp_replicated_parameter_patterns=[r"bias$"],
        parameter_to_average_patterns=[r"norm$"],
        parameter_with_row_parallelism_patterns=[r"row$"],
        parameter_with_2_sub_params_cat_dim_0=[r"fused$"],
    )
    engine.save_checkpoint(save_dir, tag="step3", client_state=client_state(info))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
