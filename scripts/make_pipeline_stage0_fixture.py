"""Write tests/data/pp2_z0_fp32/: a two-stage pipeline trained without ZeRO (needs torch and DeepSpeed).

DeepSpeed 0.19.8 on the CPU accelerator (gloo), two processes, one pipeline stage each
(``deepspeed.pipe.PipelineModule`` of ``Linear(8, 8)``, ``ReLU``, ``Linear(8, 8)``,
``Linear(8, 4)``: the layout of fixtures/pp2_z1_bf16), ZeRO stage 0, fp32, two
``train_batch`` steps of two micro-batches, then ``engine.save_checkpoint(OUT, tag="global_step2",
client_state={"my_note": "pipeline"})``. Without ZeRO each stage's torch optimizer state is in
its ``mp_rank_XX_model_states.pt`` (``optimizer``: param groups and per-parameter state, no
names) and the weights in the layer files. Nothing is edited afterwards. Run on Python 3.11 from
the repository root: ``python scripts/make_pipeline_stage0_fixture.py [OUT]`` (it starts its two
ranks itself); tests/test_complete_deepspeed.py runs it to check the fixture is what DeepSpeed writes.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "pp2_z0_fp32"
WORLD = 2


def train(save_dir: str) -> None:
    """One rank (one stage): build, train two steps, save."""
    import deepspeed
    import torch
    from deepspeed.pipe import PipelineModule

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)]

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = (out.float() - target).pow(2).mean()
        return loss

    model = PipelineModule(layers=layers, num_stages=WORLD, loss_fn=loss_fn)
    config = {
        "train_batch_size": 4,
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": 0},
        "bf16": {"enabled": False},
    }
    parameters = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=parameters, config=config)
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, 8, generator=generator), torch.randn(2, 4, generator=generator))
    data = iter([batch] * 8)
    for _ in range(2):
        engine.train_batch(data_iter=data)
    engine.save_checkpoint(save_dir, tag="global_step2", client_state={"my_note": "pipeline"})


def main(out: pathlib.Path) -> None:
    """Start the ranks, then drop the zero_to_fp32.py copy DeepSpeed may put beside the save."""
    if out.exists():
        shutil.rmtree(out)
    sys.path.insert(0, str(ROOT))
    from tests.conftest import launch_ranks  # the launcher of the DeepSpeed-backed tests

    launch_ranks([sys.executable, __file__, "--rank", str(out)], WORLD, output=out)
    (out / "zero_to_fp32.py").unlink(missing_ok=True)
    for path in sorted(out.rglob("*")):
        print(f"{path.relative_to(out.parent)}  {path.stat().st_size if path.is_file() else ''}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        train(sys.argv[2])
    else:
        main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
