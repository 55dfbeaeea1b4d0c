"""Run folders exported and loaded by ``transformers``: the round trips of issue 20, item 5.

Needs torch, transformers (5.24.0 wrote tests/data/clients), numpy (for the casts) and safetensors
(CI on 3.11). The Hugging Face Trainer run folder exports its newest save with the save's
``config.json``, so ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` loads it: its logits equal those
of the model the Trainer saved itself (bf16 module weights), bit for bit. A Lightning save, exported
with ``--strip-prefix``, loads strictly into the bare GPT-2 and gives the logits of the module weights
Lightning saved.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys

from .conftest import ROOT

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("numpy")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

CLIENTS = ROOT / "tests" / "data" / "clients"
TRAINER = CLIENTS / "hf_trainer_z2_bf16"
LIGHTNING = CLIENTS / "lightning_z2"
# The fixtures' model: tests/data/clients/README.md.
CONFIG: dict[str, int] = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 100, "n_positions": 16}
TOKENS = [
    [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 7],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99, 98, 97, 96, 95, 94],
]


def logits(model: Any) -> Any:
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "ckptkeys", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def trainer_model() -> Any:
    """The model the Trainer saved (checkpoint-4's model.safetensors: bf16 module weights)."""
    return transformers.AutoModelForCausalLM.from_pretrained(TRAINER / "checkpoint-4", dtype=torch.bfloat16)


def test_trainer_saved_the_same_model_twice(trainer_model: Any) -> None:
    """The run folder's final model.safetensors is checkpoint-4's: one reference for both."""
    final = transformers.AutoModelForCausalLM.from_pretrained(TRAINER, dtype=torch.bfloat16)
    assert torch.equal(logits(final), logits(trainer_model))


@pytest.mark.parametrize("dtype", ["auto", "fp32"])
def test_trainer_run_folder_loads_with_from_pretrained(tmp_path: pathlib.Path, trainer_model: Any, dtype: str) -> None:
    out = tmp_path / "hf"
    done = cli("export", str(TRAINER), str(out), "--dtype", dtype, "-q")
    assert done.returncode == 0, done.stderr
    assert "lm_head.weight = transformer.wte.weight: written once; from_pretrained re-ties it" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert (out / "config.json").read_bytes() == (TRAINER / "checkpoint-4" / "config.json").read_bytes()
    written = safetensors_torch.load_file(out / "model.safetensors")
    assert "lm_head.weight" not in written  # tied: written once, under the owner's name
    assert {t.dtype for t in written.values()} == {torch.bfloat16 if dtype == "auto" else torch.float32}

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=next(iter(written.values())).dtype)
    state = loaded.state_dict()
    for name, tensor in written.items():  # from_pretrained took every tensor as written
        assert torch.equal(state[name], tensor), name
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    ours = logits(loaded.to(torch.bfloat16))  # the fp32 masters cast to the training dtype
    theirs = logits(trainer_model)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert torch.equal(ours, theirs)


def test_trainer_older_save_differs(tmp_path: pathlib.Path, trainer_model: Any) -> None:
    """--save checkpoint-2 is another model: the logits above are not equal by accident."""
    out = tmp_path / "hf2"
    done = cli("export", str(TRAINER), str(out), "--save", "checkpoint-2", "--dtype", "auto", "-q")
    assert done.returncode == 0, done.stderr
    older = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert not torch.equal(logits(older), logits(trainer_model))


def lightning_module_weights(save: str) -> dict[str, Any]:
    """The module weights Lightning saved (bf16), with its attribute ``m.`` taken off."""
    states = torch.load(LIGHTNING / save / "checkpoint" / "mp_rank_00_model_states.pt", weights_only=False)
    module = states["module"]
    assert all(name.startswith("m.") for name in module)
    return {name[len("m.") :]: tensor for name, tensor in module.items()}


@pytest.mark.parametrize("save", ["epoch=0-step=4.ckpt", "epoch=0-step=2.ckpt"])
def test_lightning_save_with_strip_prefix_loads_strictly(tmp_path: pathlib.Path, save: str) -> None:
    dry = cli("export", str(LIGHTNING), str(tmp_path / "x"), "--save", save, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "--strip-prefix m." in dry.stdout  # suggested: every name starts with the attribute

    out = tmp_path / "lightning"
    done = cli("export", str(LIGHTNING), str(out), "--save", save, "--strip-prefix", "m.", "-q")
    assert done.returncode == 0, done.stderr
    assert "lm_head.weight = transformer.wte.weight: written once; from_pretrained re-ties it" in done.stderr
    written = safetensors_torch.load_file(out / "model.safetensors")

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))
    result = model.load_state_dict(written, strict=False)
    assert list(result.unexpected_keys) == []
    assert list(result.missing_keys) == ["lm_head.weight"]  # tied: what transformers re-ties
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()

    saved = lightning_module_weights(save)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))
    assert reference.load_state_dict(saved, strict=False).unexpected_keys == []
    reference.tie_weights()
    theirs = logits(reference.to(torch.bfloat16))
    ours = logits(model.to(torch.bfloat16))  # the fp32 masters cast to the training dtype
    assert torch.equal(ours, theirs)


def test_lightning_names_without_the_prefix_are_refused() -> None:
    with pytest.raises(ckptkeys.ExportError, match=r"'m\.transformer\.wte\.weight' does not start with 'model\.'"):
        ckptkeys.plan_export(LIGHTNING, strip_prefix="model.")
