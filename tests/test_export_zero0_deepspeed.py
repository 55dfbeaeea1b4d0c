"""ZeRO-0 fp16 and bf16: the fp32 export is the optimizer wrapper's fp32 masters, bit for bit.

Needs torch, DeepSpeed 0.19.8, numpy and safetensors (CI on 3.11). tests/integration/train_zero0.py
trains, without ZeRO, a model with a frozen layer shaped like the trained one after it, a frozen
copy of a layer trained at learning rate 0, a tied embedding, a buffer, and param groups in
another order than the module's; it saves the masters by name from the engine's optimizer beside
the checkpoint. The export must hold those masters, the ones ``torch.load`` gives from the saved
``fp32_groups`` in the same order, and the module's values for frozen parameters and buffers.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import pytest

from ckptkeys import ExportError, export

from .conftest import FIXTURES, ROOT, launch_ranks

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("numpy")
pytest.importorskip("deepspeed")
safetensors_torch = pytest.importorskip("safetensors.torch")

SCRIPT = ROOT / "tests" / "integration" / "train_zero0.py"
TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(scope="module", params=["fp16", "bf16"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    precision: str = request.param
    out = tmp_path_factory.mktemp(f"zero0-{precision}")
    launch_ranks([sys.executable, str(SCRIPT), str(out), precision], 1, output=out)
    return out, precision


def _same_bits(ours: Any, theirs: Any, name: str) -> None:
    assert ours.dtype == theirs.dtype, name
    assert tuple(ours.shape) == tuple(theirs.shape), name
    assert torch.equal(ours.contiguous().view(torch.uint8), theirs.contiguous().view(torch.uint8)), name


def _saved(folder: pathlib.Path) -> dict[str, Any]:
    tag = (folder / "latest").read_text().strip()
    loaded: dict[str, Any] = torch.load(folder / tag / "mp_rank_00_model_states.pt", weights_only=False)
    return loaded


def test_fp32_export_is_the_engines_masters(trained: tuple[pathlib.Path, str], tmp_path: pathlib.Path) -> None:
    folder, precision = trained
    plan = export(folder, tmp_path)
    ours = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    masters = torch.load(folder / "masters.pt")
    state = _saved(folder)
    module = state["module"]
    assert list(ours) == list(module)  # every entry, in the module's order; the tied alias too
    trained_names = set(masters) | {"head.weight"}  # head.weight is emb.weight
    for name, tensor in module.items():
        if name in trained_names:
            master = masters["emb.weight" if name == "head.weight" else name]
            _same_bits(ours[name], master, name)
            _same_bits(master.to(TORCH[precision]), tensor, name)  # DeepSpeed's module: the master cast
        else:  # frozen (still_twin: still's values, master and module alike) and buffers: the module as saved
            _same_bits(ours[name], tensor.float(), name)
    # The twin, fc's shape before it, holds other values than fc's master: the masters told them apart.
    assert not torch.equal(ours["twin.weight"], ours["fc.weight"])
    assert not torch.equal(ours["fc.weight"], module["fc.weight"].float())  # trained: the master is not the upcast
    origins = {t.name: t.origin for t in plan.tensors}
    assert origins["fc.weight"] == origins["emb.weight"] == "trainable"
    assert origins["twin.weight"] == "frozen" and origins["scale"] == "buffer"


def test_fp32_export_is_the_saved_fp32_groups_in_order(
    trained: tuple[pathlib.Path, str], tmp_path: pathlib.Path
) -> None:
    """The file's own masters, by position: fp32_groups[g][i] is the i-th parameter of param group g."""
    folder, _ = trained
    export(folder, tmp_path)
    ours = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    groups = _saved(folder)["optimizer"]["fp32_groups"]
    order = [["fc.bias"], ["emb.weight", "fc.weight"], ["still.weight", "still.bias"]]  # train_zero0.py's groups
    assert [len(g) for g in groups] == [len(names) for names in order]
    for names, group in zip(order, groups, strict=True):
        for name, master in zip(names, group, strict=True):
            _same_bits(ours[name], master, name)


def test_auto_export_is_the_module_as_saved(trained: tuple[pathlib.Path, str], tmp_path: pathlib.Path) -> None:
    """--dtype auto casts the masters to the training dtype: the module's bytes, every one."""
    folder, precision = trained
    plan = export(folder, tmp_path, dtype="auto")
    assert plan.dtype == precision
    ours = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    for name, tensor in _saved(folder)["module"].items():
        _same_bits(ours[name], tensor.to(TORCH[precision]), name)


def test_the_shared_fixture_exports_its_masters(tmp_path: pathlib.Path) -> None:
    folder = FIXTURES / "z0_fp16_ws1"
    export(folder, tmp_path)
    ours = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    state = _saved(folder)
    trained_names = ["emb.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # model.parameters() order
    (group,) = state["optimizer"]["fp32_groups"]
    for name, master in zip(trained_names, group, strict=True):
        _same_bits(ours[name], master, name)
    for name in ("scale", "frozen.weight", "frozen.bias"):  # frozen.bias has fc2.bias's shape
        _same_bits(ours[name], state["module"][name].float(), name)


def test_a_bf16_pipeline_at_stage_0_is_refused_naming_why(tmp_path: pathlib.Path) -> None:
    """BF16_Optimizer's shards without param_shapes: not cut by guess, refused (docs/export.md)."""
    out = tmp_path / "pipeline"
    script = ROOT / "tests" / "integration" / "train_pipeline_zero0.py"
    launch_ranks([sys.executable, str(script), str(out)], 2, output=out)
    assert sorted(p.name for p in (out / "step3").glob("*optim_states.pt")) == [
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt",
    ]
    with pytest.raises(ExportError) as caught:
        export(out, tmp_path / "out")
    assert caught.value.path.endswith("mp_rank_00_model_states.pt")
    assert "has no param_shapes: DeepSpeed writes none for BF16_Optimizer without ZeRO" in caught.value.reason
    assert not (tmp_path / "out").exists()


def test_moe_at_stage_0_exports_every_ranks_expert_masters(tmp_path: pathlib.Path) -> None:
    """bf16 MoE without ZeRO, experts parallel over two ranks: rank 0's masters are in the model
    states' optimizer, rank 1's experts' in expp_rank_1's; every exported parameter is one of them."""
    out = tmp_path / "moe"
    script = ROOT / "tests" / "integration" / "train_moe_for_export.py"
    launch_ranks([sys.executable, str(script), str(out), "2", "bf16", "0"], 2, output=out)
    tag = out / "step3"
    plan = export(out, tmp_path / "out")
    ours = safetensors_torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    state = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)
    rank1 = torch.load(tag / "expp_rank_1_mp_rank_00_optim_states.pt", weights_only=False)["optimizer"]
    masters = [m for group in state["optimizer"]["fp32_groups"] for m in group]
    moe_groups = [g for g, group in enumerate(rank1["optimizer_state_dict"]["param_groups"]) if group.get("moe")]
    masters += [m for g in moe_groups for m in rank1["fp32_groups"][g]]
    saved = dict(state["module"])
    for file in sorted(tag.glob("layer_*_expert_*_model_states.pt")):
        saved.update(torch.load(file, weights_only=False))
    assert set(ours) == set(saved)
    assert len(masters) == len(saved)  # no frozen parameters or buffers here
    for name, tensor in saved.items():
        assert [m for m in masters if m.shape == ours[name].shape and torch.equal(m, ours[name])], name
        _same_bits(ours[name].to(torch.bfloat16), tensor, name)  # the module: the master cast
    origins = {t.name: t.origin for t in plan.tensors}
    assert {origins[n] for n in saved if ".deepspeed_experts." in n} == {"expert"}
    assert {origins[n] for n in state["module"]} == {"trainable"}
