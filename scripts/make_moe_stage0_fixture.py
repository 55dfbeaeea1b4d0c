"""Write tests/data/moe_z0_fp32_ep2/: an MoE checkpoint trained without ZeRO (needs torch and DeepSpeed).

DeepSpeed 0.19.8 on the CPU accelerator (gloo), two processes, ZeRO stage 0, fp32, one
``deepspeed.moe.layer.MoE`` layer with 2 experts and expert parallelism 2, three steps, then
``engine.save_checkpoint(OUT, tag="global_step3")``. Without ZeRO, DeepSpeed writes the
optimizer state of each expert-parallel rank to ``expp_rank_{R}_mp_rank_00_optim_states.pt``.
Nothing is edited afterwards. Run on Python 3.11 from the repository root:
``python scripts/make_moe_stage0_fixture.py`` (it starts its two ranks itself).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "moe_z0_fp32_ep2"
WORLD = 2


def train(save_dir: str) -> None:
    """One rank: build, train three steps, save."""
    import deepspeed
    import torch
    from deepspeed.moe.layer import MoE
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)

    class Net(torch.nn.Module):  # type: ignore[misc]  # torch is Any to mypy here
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(4, 4)
            self.moe = MoE(hidden_size=4, expert=torch.nn.Linear(4, 4), num_experts=2, ep_size=WORLD, k=1)
            self.out = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden, aux_loss, _ = self.moe(self.inp(x))
            result: torch.Tensor = self.out(hidden).pow(2).mean() + aux_loss
            return result

    model = Net()
    groups = split_params_into_different_moe_groups_for_optimizer(
        [{"params": list(model.parameters()), "name": "parameters"}]
    )
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 0},
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    for _ in range(3):
        loss = engine(torch.randn(4, 4))
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(save_dir, tag="global_step3")


def main() -> None:
    """Start the ranks, then drop the zero_to_fp32.py copy DeepSpeed puts beside the save."""
    if OUT.exists():
        shutil.rmtree(OUT)
    sys.path.insert(0, str(ROOT))
    from tests.conftest import launch_ranks  # the launcher of the DeepSpeed-backed tests

    launch_ranks([sys.executable, __file__, "--rank", str(OUT)], WORLD, output=OUT)
    (OUT / "zero_to_fp32.py").unlink(missing_ok=True)
    for path in sorted(OUT.rglob("*")):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size if path.is_file() else ''}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        train(sys.argv[2])
    else:
        main()
