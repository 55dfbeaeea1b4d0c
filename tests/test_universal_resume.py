"""Resume from ckptkeys' universal checkpoint as from DeepSpeed's, on another number of ranks (needs DeepSpeed).

tests/integration/train_universal.py trains a small model with DeepSpeed on the CPU (gloo) on
two ranks for three steps and saves it: ZeRO-1 fp32, ZeRO-2 bf16, ZeRO-3 bf16 (data parallel
2), and ZeRO-1 bf16 with tensor parallel 2 through a Megatron-style ``mpu`` and
``universal_checkpoint_info`` (vocabulary, row-parallel, fused, replicated and averaged
parameters). Each save is converted by ``ckptkeys.universal`` and by ``ds_to_universal`` (the
two folders the same, file for file: tests/universal_compare.py); each
universal checkpoint is loaded with ``"checkpoint": {"load_universal": true}`` by one rank and
by four (tensor parallel: tp 1 and tp 2 x dp 2) and trained three more steps. From ckptkeys'
folder and from DeepSpeed's, every rank has the same fp32 masters and Adam moments after the
load and after training, and the same losses, bit for bit; and the load did load (the masters
are the universal files' tensors, not the model's own initialisation). One training per
job trains every configuration, and one job per size resumes them all from both folders in turn
(session cache): starting DeepSpeed's processes costs more than this training.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import pytest

import ckptkeys

from .conftest import ROOT, ds_to_universal, launch_ranks

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from .universal_compare import assert_same_object, assert_same_universal, load_pt  # noqa: E402  # imports torch

SCRIPT = ROOT / "tests" / "integration" / "train_universal.py"
TAG = "step3"
# configuration trained on two ranks -> (ranks, configuration) of each resume
RESUMES = {
    "z1": [(1, "z1"), (4, "z1")],
    "z2": [(1, "z2"), (4, "z2")],
    "z3": [(1, "z3"), (4, "z3")],
    "tp2": [(1, "tp1"), (4, "tp2")],
}
SIDES = ("ckptkeys", "deepspeed")


class Runs:
    """The four configurations trained in one job, each converted both ways; then one resume
    job per number of ranks, resuming every configuration from both folders. Once per session:
    a failed training or conversion is raised again to every test that needs it, and a
    configuration that did not convert is left out of the resume jobs (its tests fail on it)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.trained: bool | str = False  # True, or why the training job failed
        self.converted: dict[str, str | None] = {}  # None, or why the conversion failed
        self.resumed: dict[int, pathlib.Path] = {}

    def _saves(self) -> pathlib.Path:
        saves = self.root / "saves"
        if self.trained is False:
            self.trained = "it was interrupted"
            try:
                launch_ranks([sys.executable, str(SCRIPT), "train", str(saves), *RESUMES], 2, output=saves)
            except AssertionError as error:
                self.trained = str(error)
                raise
            self.trained = True
        assert self.trained is True, f"the training job failed: {self.trained}"
        return saves

    def save(self, name: str) -> pathlib.Path:
        """The folder of ``name``'s save (``saves/<name>``) conversions (``ckptkeys/``, ``deepspeed/``)."""
        root = self.root / name
        if name not in self.converted:
            source = self._saves() / name / TAG
            self.converted[name] = "it was interrupted"
            try:
                done = ds_to_universal(source, root / "deepspeed" / f"{TAG}_universal")
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                ckptkeys.universal(source, output_folder=root / "ckptkeys" / f"{TAG}_universal")
            except Exception as error:
                self.converted[name] = f"{type(error).__name__}: {error}"
                raise
            self.converted[name] = None
        assert self.converted[name] is None, f"{name}: the conversion failed: {self.converted[name]}"
        return root

    def resume(self, world: int) -> pathlib.Path:
        """``<folder>/<config>/<0 ckptkeys|1 deepspeed>-rank<r>.pt`` of the resume job on ``world`` ranks."""
        if world not in self.resumed:
            out = self.root / f"resumed{world}"
            jobs = []
            for name, resumes in RESUMES.items():
                try:
                    root = self.save(name)
                except Exception:  # that configuration's own tests say why
                    continue
                folders = ",".join(str(root / side) for side in SIDES)
                jobs += [f"{config}={folders}" for ranks, config in resumes if ranks == world]
            assert jobs, "no configuration converted"
            launch_ranks([sys.executable, str(SCRIPT), "resume", str(out), *jobs], world, output=out)
            self.resumed[world] = out
        return self.resumed[world]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("universal_resume"))


def _universal_tensor(root: pathlib.Path, name: str, key: str) -> Any:
    loaded = load_pt(root / "deepspeed" / f"{TAG}_universal" / "zero" / name / f"{key}.pt")
    return loaded["param"] if isinstance(loaded, dict) else loaded  # ZeRO-3: bare tensors


@pytest.mark.parametrize("name", list(RESUMES))
def test_trained_saves_convert_as_ds_to_universal_converts_them(name: str, runs: Runs) -> None:
    root = runs.save(name)
    assert_same_universal(root / "ckptkeys" / f"{TAG}_universal", root / "deepspeed" / f"{TAG}_universal")


CASES = [(name, world, config) for name, resumes in RESUMES.items() for world, config in resumes]


@pytest.mark.parametrize(("name", "world", "config"), CASES, ids=[f"{n}-to-{c}x{w}" for n, w, c in CASES])
def test_resume_from_ckptkeys_equals_resume_from_ds_to_universal(
    name: str, world: int, config: str, runs: Runs
) -> None:
    root = runs.save(name)
    results = runs.resume(world) / config
    for rank in range(world):
        ours, theirs = (load_pt(results / f"{index}-rank{rank}.pt") for index in range(len(SIDES)))
        assert_same_object(ours, theirs, f"{config}: rank {rank} of {world}")
        assert theirs["loaded"]["global_steps"] == 3
        assert torch.isfinite(theirs["losses"]).all()
    # The load moved the weights: one rank holds the universal tensors whole (tp 1: the
    # vocabulary padded again with zero rows).
    if world == 1:
        loaded = load_pt(results / "1-rank0.pt")["loaded"]["state"]
        zero = root / "deepspeed" / f"{TAG}_universal" / "zero"
        assert set(loaded) == {p.name for p in zero.iterdir() if p.is_dir()}
        for param, state in loaded.items():
            for key, tensor in state.items():
                expected = _universal_tensor(root, param, key).detach()
                if tensor.numel() != expected.numel():  # the vocabulary-parallel embedding
                    expected = torch.nn.functional.pad(expected, (0, 0, 0, tensor.shape[0] - expected.shape[0]))
                assert torch.equal(tensor.flatten(), expected.flatten()), (param, key)
