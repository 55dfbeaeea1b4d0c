"""ckptkeys export against DeepSpeed's zero_to_fp32, torch and safetensors' own loader.

Needs torch, DeepSpeed 0.19.8, numpy and safetensors (CI on 3.11). On every shared fixture and
on checkpoints tests/integration/train_for_export.py writes (tied, frozen and padded
parameters, ZeRO-1/2/3, two ranks): the export, loaded by ``safetensors.torch.load_file``,
has zero_to_fp32's names and shapes and bit-identical values (cast as zero_to_fp32's
``--dtype`` casts), tied names written once; where zero_to_fp32 fails, the fp32 export cast to
the training dtype equals the module weights the files hold, bit for bit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pathlib
import re
import shutil
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ExportError, export, plan_export

from .conftest import FIXTURES, ROOT, launch_ranks

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("numpy")
zero_to_fp32 = pytest.importorskip("deepspeed.utils.zero_to_fp32")
safetensors_torch = pytest.importorskip("safetensors.torch")

ACCEPTED = ["z1_bf16_ws1", "z1_fp16_ws2", "z2_bf16_ws2", "z3_bf16_ws2", "uc_z2_bf16_ws2"]
TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCRIPT = ROOT / "tests" / "integration" / "train_for_export.py"


def _reference(folder: pathlib.Path, tag: str | None = None) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        state: dict[str, Any] = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    return state


def _load(out: pathlib.Path) -> dict[str, Any]:
    loaded: dict[str, Any] = safetensors_torch.load_file(str(out / "model.safetensors"))
    return loaded


def _same_bits(ours: Any, theirs: Any, name: str) -> None:
    assert ours.dtype == theirs.dtype, name
    assert tuple(ours.shape) == tuple(theirs.shape), name
    assert torch.equal(ours.contiguous().view(torch.uint8), theirs.contiguous().view(torch.uint8)), name


def _compare_with_zero_to_fp32(
    folder: pathlib.Path, out: pathlib.Path, dtype: ckptkeys.Dtype, tag: str | None = None
) -> None:
    plan = export(folder, out, dtype=dtype, tag=tag)
    ours = _load(out)
    reference = _reference(folder, tag)
    target = TORCH[plan.dtype]
    # zero_to_fp32 names every tensor; tied aliases are written once, under their owner.
    extra = {t.name for t in plan.tensors if t.origin == "frozen"} - set(reference)
    assert set(ours) | set(plan.aliases) == set(reference) | extra
    for name, tensor in reference.items():
        # As DeepSpeed's own --dtype: floating tensors cast, others kept (to_torch_tensor).
        expected = tensor.to(target) if tensor.is_floating_point() else tensor
        _same_bits(ours[plan.aliases.get(name, name)], expected, name)
        if name in plan.aliases:
            assert reference[plan.aliases[name]] is tensor  # zero_to_fp32's alias is the same tensor
    # Frozen parameters zero_to_fp32 drops (ZeRO-1) come from the module as saved.
    model = _model_states(folder, tag)
    for name in extra:
        _same_bits(ours[name], model["module"][name].to(target), name)


def _model_states(folder: pathlib.Path, tag: str | None = None) -> dict[str, Any]:
    tag_folder = folder / (tag or (folder / "latest").read_text().strip())
    files = sorted(tag_folder.glob("*model_states.pt"))
    loaded: dict[str, Any] = torch.load(files[0], map_location="cpu", weights_only=False)
    return loaded


@pytest.mark.parametrize("name", ACCEPTED)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_fixture_export_equals_zero_to_fp32(name: str, dtype: ckptkeys.Dtype, tmp_path: pathlib.Path) -> None:
    _compare_with_zero_to_fp32(FIXTURES / name, tmp_path, dtype)


@pytest.mark.parametrize("name", ["z0_fp32_ws1", "z0_fp16_ws1"])
def test_zero0_export_equals_the_masters_and_cast_the_module_weights(name: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError):  # zero_to_fp32 cannot read ZeRO-0 (fixtures/README.md)
        _reference(FIXTURES / name)
    plan = export(FIXTURES / name, tmp_path / "fp32")
    ours = _load(tmp_path / "fp32")
    state = _model_states(FIXTURES / name)
    module = state["module"]
    assert list(ours) == list(module)
    # fp16: the wrapper's fp32 masters (fp32_groups, in the order of model.parameters() without the
    # frozen ones); fp32: no wrapper, the module is the master (tests/test_export_zero0_deepspeed.py).
    groups = state["optimizer"].get("fp32_groups", [])
    trained = [t.name for t in plan.tensors if t.origin == "trainable"]
    assert len(trained) == sum(len(g) for g in groups)
    for key, master in zip(trained, [m for g in groups for m in g], strict=True):
        _same_bits(ours[key], master, key)
    for key, tensor in module.items():
        _same_bits(ours[key].to(tensor.dtype), tensor, key)  # fp32 export cast back: the saved weights
        if key not in trained:
            _same_bits(ours[key], tensor.float(), key)  # frozen, buffers, fp32 runs: the module as saved
    export(FIXTURES / name, tmp_path / "auto", dtype="auto")
    auto = _load(tmp_path / "auto")
    for key, tensor in module.items():
        expected = tensor.to(TORCH[plan.precision or "fp32"])
        _same_bits(auto[key], expected, key)


@pytest.mark.parametrize("name", [n for n in ACCEPTED if n != "z3_bf16_ws2"])  # ZeRO-3 modules: placeholders
def test_fp32_export_cast_to_the_training_dtype_equals_the_module_weights(name: str, tmp_path: pathlib.Path) -> None:
    """DeepSpeed's module weights are the fp32 master weights cast to the training dtype."""
    plan = export(FIXTURES / name, tmp_path)
    ours = _load(tmp_path)
    for key, tensor in _model_states(FIXTURES / name)["module"].items():
        _same_bits(ours[plan.aliases.get(key, key)].to(tensor.dtype), tensor, key)


@pytest.mark.parametrize("rank", [0, 1])
def test_tp_rank_export_equals_that_ranks_module_weights(rank: int, tmp_path: pathlib.Path) -> None:
    export(FIXTURES / "tp2_z1_bf16", tmp_path, tp_rank=rank)
    ours = _load(tmp_path)
    module = torch.load(
        FIXTURES / "tp2_z1_bf16" / "global_step3" / f"mp_rank_{rank:02d}_model_states.pt", weights_only=False
    )["module"]
    assert set(ours) == set(module)
    for key, tensor in module.items():
        _same_bits(ours[key].to(tensor.dtype), tensor, key)


@pytest.mark.parametrize(
    ("name", "shard", "key"),
    [
        ("z2_bf16_ws2", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "single_partition_of_fp32_groups"),
        ("z3_bf16_ws2", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "fp32_flat_groups"),
    ],
)
def test_short_partition_names_the_file(name: str, shard: str, key: str, tmp_path: pathlib.Path) -> None:
    """A partition shorter than param_shapes needs (cut by torch, saved by torch): refused, naming it."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    path = folder / "global_step3" / shard
    state = torch.load(path, weights_only=False)
    groups = state["optimizer_state_dict"][key]
    groups[0] = groups[0][:-10].clone()
    torch.save(state, path)
    # Refused by validate's check, naming the short shard and its key, before any planning.
    refusal = rf"{re.escape(shard)}: param-shapes-mismatch \[optimizer_state_dict/{key}\[0\]\]: .* too short"
    with pytest.raises(ExportError, match=refusal):
        plan_export(folder)
    from ckptkeys._cli._main import main

    assert main(["export", str(folder), str(tmp_path / "out"), "-q"]) == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()


# -- checkpoints DeepSpeed writes here -----------------------------------------------------------


def _train(save: pathlib.Path, world: int, stage: int, precision: str) -> None:
    launch_ranks([sys.executable, str(SCRIPT), str(save), str(stage), precision], world, output=save)


RUNS = [(2, 1, "bf16"), (2, 2, "bf16"), (2, 3, "bf16"), (2, 2, "fp32")]


@pytest.mark.parametrize(("world", "stage", "precision"), RUNS, ids=[f"ws{w}-z{s}-{p}" for w, s, p in RUNS])
def test_trained_checkpoint_exports_as_zero_to_fp32_and_loads_strictly(
    world: int, stage: int, precision: str, tmp_path: pathlib.Path
) -> None:
    save = tmp_path / "save"
    _train(save, world, stage, precision)
    for dtype in ("fp32", "bf16"):
        _compare_with_zero_to_fp32(save, tmp_path / dtype, dtype, tag="step3")
    plan = plan_export(save, tag="step3")
    assert plan.aliases == {"head.weight": "emb.weight"}
    # The model it was trained from takes the export with strict=True, tied names re-pointed.
    spec = importlib.util.spec_from_file_location("train_for_export", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    state = _load(tmp_path / "fp32")
    for alias, owner in plan.aliases.items():
        state[alias] = state[owner]
    model = script.build_model()
    model.load_state_dict(state, strict=True)
    assert model.head.weight is model.emb.weight
    # Sharded, the same tensors.
    sharded = export(save, tmp_path / "sharded", tag="step3", max_shard_size=300)
    assert sharded.sharded
    joined: dict[str, Any] = {}
    for shard in sharded.shards:
        joined.update(safetensors_torch.load_file(str(tmp_path / "sharded" / shard.filename)))
    whole = _load(tmp_path / "fp32")
    assert set(joined) == set(whole)
    for name, tensor in whole.items():
        _same_bits(joined[name], tensor, name)
    assert ckptkeys.scan(save).latest == "step3"


@pytest.mark.parametrize("limit", ["300B", "1KB", "2KB", "5GB"])
def test_shards_are_what_huggingface_hub_splits(limit: str) -> None:
    """The same shards and file names as huggingface_hub's split (what transformers and DeepSpeed use)."""
    hub = pytest.importorskip("huggingface_hub")
    plan = plan_export(FIXTURES / "z2_bf16_ws2", max_shard_size=limit.replace("300B", "300"))
    state = {t.name: torch.empty(t.shape, dtype=getattr(torch, t.dtype)) for t in plan.tensors}
    split = hub.split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=plan.max_shard_size
    )
    assert {s.filename: list(s.tensors) for s in plan.shards} == split.filename_to_tensors
    assert plan.sharded == split.is_sharded
    if plan.sharded:
        assert plan.index()["weight_map"] == split.tensor_to_filename
        assert plan.index()["metadata"]["total_size"] == split.metadata["total_size"]


@pytest.mark.parametrize("text", ["5GB", "500MB", "1KB", "2.5GB", "3TB"])
def test_sizes_parse_as_huggingface_hub_parses_them(text: str) -> None:
    base = pytest.importorskip("huggingface_hub.serialization._base")
    from ckptkeys._export._types import parse_size

    assert parse_size(text) == base.parse_size_to_int(text)


def test_pipeline_export_cast_to_bf16_equals_the_layer_files(tmp_path: pathlib.Path) -> None:
    folder = FIXTURES / "pp2_z1_bf16"
    with pytest.raises(AttributeError):  # zero_to_fp32 cannot read pipeline checkpoints (fixtures/README.md)
        _reference(folder)
    export(folder, tmp_path)
    ours = _load(tmp_path)
    expected: dict[str, Any] = {}
    for layer in sorted((folder / "global_step2").glob("layer_*-model_states.pt")):
        index = int(layer.name[len("layer_") : len("layer_") + 2])
        for key, tensor in torch.load(layer, weights_only=False).items():
            expected[f"{index}.{key}"] = tensor
    assert set(ours) == set(expected)
    for name, tensor in expected.items():
        assert ours[name].dtype == torch.float32
        _same_bits(ours[name].to(tensor.dtype), tensor, name)
    # And the fp32 values are each stage's master weights, as DeepSpeed's BF16 optimizer holds them.
    for stage, names in ((0, ["0.weight", "0.bias"]), (1, ["2.weight", "2.bias", "3.weight", "3.bias"])):
        shard = folder / "global_step2" / f"bf16_zero_pp_rank_0_mp_rank_{stage:02d}_optim_states.pt"
        flat = torch.load(shard, weights_only=False)["optimizer_state_dict"]["single_partition_of_fp32_groups"][0]
        joined = torch.cat([ours[n].flatten() for n in names])
        _same_bits(joined, flat[: joined.numel()], f"stage {stage}")


def test_moe_export_equals_the_model_and_expert_files(tmp_path: pathlib.Path) -> None:
    folder = FIXTURES / "moe_z2_fp32_ep2"
    with pytest.raises(ValueError, match="is not a model state checkpoint"):  # zero_to_fp32 (fixtures/README.md)
        _reference(folder)
    export(folder, tmp_path)
    ours = _load(tmp_path)
    tag = folder / "global_step3"
    expected = dict(torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)["module"])
    for expert in (0, 1):
        expected.update(torch.load(tag / f"layer_0_expert_{expert}_mp_rank_00_model_states.pt", weights_only=False))
    assert set(ours) == set(expected)
    for name, tensor in expected.items():  # trained in fp32: the module weights are the master weights
        _same_bits(ours[name], tensor, name)
    # Rank r's expert group (partition_count 1) holds expert r whole: the same values again.
    for rank in (0, 1):
        state = torch.load(tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", weights_only=False)
        flat = state["optimizer_state_dict"]["single_partition_of_fp32_groups"][1]
        prefix = f"moe.deepspeed_moe.experts.deepspeed_experts.{rank}."
        joined = torch.cat([ours[prefix + "weight"].flatten(), ours[prefix + "bias"]])
        _same_bits(joined, flat[: joined.numel()], f"rank {rank} experts")


TP_SCRIPT = ROOT / "tests" / "integration" / "train_tp_for_export.py"


def test_tensor_parallel_export_equals_ds_to_universal(tmp_path: pathlib.Path) -> None:
    """Two tensor-parallel ranks merged by universal_checkpoint_info, as ds_to_universal merges them."""
    from .conftest import ds_to_universal

    save = tmp_path / "save"
    launch_ranks([sys.executable, str(TP_SCRIPT), str(save)], 2, output=save)
    done = ds_to_universal(save / "step3", tmp_path / "universal")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for dtype in ("fp32", "bf16"):
        plan = export(save, tmp_path / dtype, dtype=dtype)
        assert plan.layout == "zero-1/2 tp"
        ours = _load(tmp_path / dtype)
        folder = tmp_path / "universal" / "zero"
        names = {p.name for p in folder.iterdir() if p.is_dir()}
        assert set(ours) == names == {"embed", "column", "row", "fused", "bias", "norm"}
        for name in names:
            merged = torch.load(folder / name / "fp32.pt", weights_only=False)["param"]
            _same_bits(ours[name], merged.to(TORCH[dtype]), name)
    # The merge had something to do: the averaged parameter differs between the ranks.
    modules = [
        torch.load(save / "step3" / f"mp_rank_0{r}_model_states.pt", weights_only=False)["module"] for r in (0, 1)
    ]
    assert not torch.equal(modules[0]["norm"], modules[1]["norm"])
    assert torch.equal(modules[0]["bias"], modules[1]["bias"])


@pytest.mark.parametrize("name", ["z3_bf16_ws2", "uc_z2_bf16_ws2"])
def test_universal_output_exports_as_its_source(name: str, tmp_path: pathlib.Path) -> None:
    """ds_to_universal run here (ZeRO-3 writes bare tensors, ZeRO-1/2 dicts): the same tensors."""
    from .conftest import ds_to_universal

    done = ds_to_universal(FIXTURES / name / "global_step3", tmp_path / "universal")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    plan = export(tmp_path / "universal", tmp_path / "from_universal")
    assert plan.layout == "universal"
    export(FIXTURES / name, tmp_path / "from_source")
    ours, source = _load(tmp_path / "from_universal"), _load(tmp_path / "from_source")
    assert set(ours) == set(source)
    for key, tensor in source.items():
        _same_bits(ours[key], tensor, key)


MOE_SCRIPT = ROOT / "tests" / "integration" / "train_moe_for_export.py"


@pytest.mark.parametrize("ep_size", [2, 1])
def test_moe_bf16_export_is_the_fp32_masters_of_every_expert(ep_size: int, tmp_path: pathlib.Path) -> None:
    """Four experts over two ranks (expert parallel 2, or 1: every rank all experts), bf16, ZeRO-2.

    The files hold the bf16 weights; the export's fp32 values are the optimizer's masters, and
    cast to bf16 they are those weights bit for bit, every expert under its global name.
    """
    save = tmp_path / "save"
    launch_ranks([sys.executable, str(MOE_SCRIPT), str(save), str(ep_size), "bf16"], 2, output=save)
    plan = export(save, tmp_path / "out")
    ours = _load(tmp_path / "out")
    tag = save / "step3"
    files = dict(torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)["module"])
    for expert in range(4):
        files.update(torch.load(tag / f"layer_0_expert_{expert}_mp_rank_00_model_states.pt", weights_only=False))
    assert set(ours) == set(files)
    for name, tensor in files.items():
        assert ours[name].dtype == torch.float32
        _same_bits(ours[name].to(torch.bfloat16), tensor, name)
    # Every tensor, experts included, comes from the optimizer's fp32 partitions, none from the files.
    assert all("optim_states" in s.path for t in plan.tensors for s in t.sources)
    # With expert parallel 1 the expert group is partitioned like the dense one: no renaming needed.
    assert {t.origin for t in plan.tensors} == ({"trainable", "expert"} if ep_size == 2 else {"trainable"})
