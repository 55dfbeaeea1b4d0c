"""Completeness against what DeepSpeed writes and torch loads (torch, DeepSpeed 0.19.8, safetensors; CI on 3.11).

tests/data/pp2_z0_fp32 is what scripts/make_pipeline_stage0_fixture.py makes DeepSpeed write, byte
for byte; its export equals the layer files torch loads; without a layer file, or a pipeline
stage without its optimizer shard, validate and export refuse, and ``--weights module`` writes
the layer files' weights as saved, saying so in the files' metadata.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys

from .conftest import DATA, FIXTURES, ROOT

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
safetensors = pytest.importorskip("safetensors")
safetensors_torch = pytest.importorskip("safetensors.torch")

PIPELINE = DATA / "pp2_z0_fp32"
SCRIPT = ROOT / "scripts" / "make_pipeline_stage0_fixture.py"


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _layers(tag: pathlib.Path) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for layer in sorted(tag.glob("layer_*-model_states.pt")):
        index = int(layer.name[len("layer_") : len("layer_") + 2])
        for key, tensor in torch.load(layer, weights_only=True).items():
            expected[f"{index}.{key}"] = tensor
    return expected


def _same_bits(ours: Any, theirs: Any, name: str) -> None:
    assert (ours.dtype, tuple(ours.shape)) == (theirs.dtype, tuple(theirs.shape)), name
    assert torch.equal(ours.contiguous().view(torch.uint8), theirs.contiguous().view(torch.uint8)), name


def test_the_pipeline_fixture_is_what_deepspeed_writes(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "pp2_z0_fp32"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), DS_ACCELERATOR="cpu")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, env=env, capture_output=True, timeout=900)
    assert _files(out) == _files(PIPELINE)


def test_the_pipeline_export_equals_the_layer_files(tmp_path: pathlib.Path) -> None:
    ckptkeys.export(PIPELINE, tmp_path)
    ours = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    expected = _layers(PIPELINE / "global_step2")
    assert set(ours) == set(expected) == {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"}
    for name, tensor in expected.items():  # trained in fp32 without ZeRO: the layer files are the weights
        _same_bits(ours[name], tensor, name)
    # Each stage's optimizer state trains exactly its layers' parameters, in order: what validate matches.
    for stage, names in ((0, ["0.weight", "0.bias"]), (1, ["2.weight", "2.bias", "3.weight", "3.bias"])):
        state = torch.load(PIPELINE / "global_step2" / f"mp_rank_{stage:02d}_model_states.pt", weights_only=False)
        optimizer = state["optimizer"]
        shapes = [tuple(optimizer["state"][i]["exp_avg"].shape) for i in optimizer["param_groups"][0]["params"]]
        assert shapes == [tuple(expected[n].shape) for n in names]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "ckptkeys", *argv], capture_output=True, text=True, env=env)


def test_the_issues_pipeline_without_a_layer_file(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "save"
    shutil.copytree(PIPELINE, root)
    missing = root / "global_step2" / "layer_03-model_states.pt"
    missing.unlink()
    validated = _run("validate", str(root))
    assert validated.returncode == 1
    assert f"missing-layer: {missing}" in validated.stdout
    exported = _run("export", str(root), str(tmp_path / "out"))
    assert exported.returncode == 1
    assert exported.stderr.startswith(f"ckptkeys export: {missing}: missing-layer: ")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_stage_without_its_shard_exports_its_layer_weights_only_when_asked(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "save"
    shutil.copytree(FIXTURES / "pp2_z1_bf16", root)
    shard = root / "global_step2" / "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt"
    shard.unlink()
    refused = _run("export", str(root), str(tmp_path / "masters"))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"ckptkeys export: {shard}: missing-rank: ")
    written = _run("export", "--weights", "module", "--dtype", "auto", str(root), str(tmp_path / "module"))
    assert written.returncode == 0, written.stderr
    assert "(the module's weights as saved (--weights module))" in written.stderr
    path = str(tmp_path / "module" / "model.safetensors")
    with safetensors.safe_open(path, framework="pt") as opened:
        plan = ckptkeys.plan_export(root, weights="module", dtype="auto")
        assert opened.metadata() == {"format": "pt", "weights": "module", "ckptkeys_plan": plan.identity()}
    ours = safetensors_torch.load_file(path)
    expected = _layers(root / "global_step2")
    assert set(ours) == set(expected)
    for name, tensor in expected.items():  # the bf16 layer weights as saved, not masters
        _same_bits(ours[name], tensor, name)
