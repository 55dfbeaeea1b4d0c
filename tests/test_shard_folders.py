"""Folders of model weights (shards and their index, or one weight file), as ``ckptkeys export`` and
``save_pretrained`` write them: recognised by ``inspect``, checked by ``validate`` against the index."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

import ckptkeys
from ckptkeys import WeightsFolderReport, export
from ckptkeys._cli._main import main

from . import security_cases
from .conftest import DATA, FIXTURES

TRAINER = DATA / "clients" / "hf_trainer_z2_bf16"
INDEX = "model.safetensors.index.json"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def sharded(tmp_path: pathlib.Path) -> pathlib.Path:
    """ckptkeys' own export of the Trainer run, in shards of at most 20 KB, with its index."""
    out = tmp_path / "weights"
    plan = export(TRAINER, out, max_shard_size=20_000)
    assert plan.sharded
    return out


def _index(folder: pathlib.Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / INDEX).read_text())
    return document


def _problems(folder: pathlib.Path) -> list[tuple[str, str, str | None, str | None]]:
    return [(p.severity, p.code, p.file, p.key_path) for p in ckptkeys.validate(folder)]


def test_an_export_is_recognised_and_healthy(sharded: pathlib.Path) -> None:
    report = ckptkeys.validate_path(sharded)
    assert isinstance(report, WeightsFolderReport)
    (index,) = report.indexes
    assert index.name == INDEX and index.weight_map == _index(sharded)["weight_map"]
    assert index.total_size == sum(size for name in report.files for size in report.tensors(name).values())
    assert sorted(report.files) == sorted({*index.weight_map.values()})
    (problem,) = report.problems
    assert (problem.severity, problem.code) == ("info", "not-deepspeed")
    shards = len(report.files)
    assert problem.message == (
        f"not a DeepSpeed checkpoint: a folder of {shards} safetensors shard(s) with {INDEX}, "
        f"{len(index.weight_map)} tensors"
    )
    assert _run("validate", str(sharded))[0] == 0


def test_inspect_shows_index_files_tensors_and_metadata(sharded: pathlib.Path) -> None:
    status, out, _ = _run("inspect", str(sharded))
    assert status == 0
    assert out.startswith(f"{sharded} (weights folder)\n")
    total = _index(sharded)["metadata"]["total_size"]
    assert f"Index {INDEX}: {len(_index(sharded)['weight_map'])} tensors in " in out
    assert f"total_size {total:,} bytes" in out
    assert "File model-00001-of-" in out and "transformer.wte.weight: F32[100, 32]" in out
    assert "__metadata__: weights='masters'" in out
    status, out, _ = _run("inspect", "--json", str(sharded))
    document = json.loads(out)
    assert document["kind"] == "weights"
    (index,) = document["weights"]["indexes"]
    assert (index["name"], index["total_size"]) == (INDEX, total)
    assert [f["relpath"] for f in document["files"]] == sorted(f["relpath"] for f in document["files"])
    assert all(f["format"] == "safetensors" for f in document["files"])


def test_a_missing_shard_names_it_and_a_tensor_that_needs_it(sharded: pathlib.Path) -> None:
    weight_map = _index(sharded)["weight_map"]
    shard = sorted(set(weight_map.values()))[1]
    (sharded / shard).unlink()
    needs = sorted(name for name, file in weight_map.items() if file == shard)[0]
    errors = [p for p in ckptkeys.validate(sharded) if p.severity == "error"]
    assert [(p.code, p.file, p.key_path) for p in errors] == [("missing-shard", str(sharded / shard), needs)]
    assert f"{shard} is missing" in errors[0].message and repr(needs) in errors[0].message
    assert _run("validate", str(sharded))[0] == 1


def test_index_and_shards_disagree(sharded: pathlib.Path) -> None:
    index = _index(sharded)
    weight_map = index["weight_map"]
    moved, stays = sorted(weight_map)[:2]
    other = next(f for f in sorted(set(weight_map.values())) if f != weight_map[moved])
    weight_map[moved] = other  # the index points it at a shard that lacks it
    del weight_map[stays]  # and forgets one a shard holds
    (sharded / INDEX).write_text(json.dumps(index))
    found = _problems(sharded)
    assert ("error", "shard-lacks-tensor", str(sharded / other), moved) in found
    assert ("warning", "unlisted-tensor", str(sharded / _index_file_of(sharded, moved)), moved) in found
    assert any(code == "unlisted-tensor" and key == stays for _, code, _, key in found)
    assert any(code == "index-total-size" for _, code, _, _ in found)


def _index_file_of(folder: pathlib.Path, tensor: str) -> str:
    for name in sorted(p.name for p in folder.glob("*.safetensors")):
        if any(t.name == tensor for t in ckptkeys.read_safetensors(folder / name).tensors):
            return name
    raise KeyError(tensor)


def test_total_size_against_the_tensors(sharded: pathlib.Path) -> None:
    index = _index(sharded)
    index["metadata"]["total_size"] += 4
    (sharded / INDEX).write_text(json.dumps(index))
    assert [(s, c) for s, c, _, _ in _problems(sharded) if c != "not-deepspeed"] == [("warning", "index-total-size")]


def test_a_broken_shard_is_unreadable_and_the_rest_checked(sharded: pathlib.Path) -> None:
    shard = sorted(sharded.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-1])
    found = _problems(sharded)
    assert ("error", "unreadable-file", str(shard), None) in found
    assert not [c for _, c, _, _ in found if c in ("shard-lacks-tensor", "index-total-size")]


def test_an_unlisted_shard_and_a_broken_index(sharded: pathlib.Path) -> None:
    first = sorted(sharded.glob("model-*.safetensors"))[0]
    shutil.copyfile(first, sharded / "model-00099-of-00099.safetensors")
    shutil.copyfile(first, sharded / "training_args.bin")  # not a shard's name: not flagged
    found = _problems(sharded)
    assert [(s, c, f) for s, c, f, _ in found if c == "unlisted-shard"] == [
        ("warning", "unlisted-shard", str(sharded / "model-00099-of-00099.safetensors"))
    ]
    (sharded / INDEX).write_text("{not json")
    assert ("error", "unreadable-index", str(sharded / INDEX), None) in _problems(sharded)


def test_an_index_naming_a_path_outside(sharded: pathlib.Path) -> None:
    index = _index(sharded)
    name = sorted(index["weight_map"])[0]
    index["weight_map"][name] = "../elsewhere.safetensors"
    (sharded / INDEX).write_text(json.dumps(index))
    errors = [p for p in ckptkeys.validate(sharded) if p.code == "missing-shard"]
    assert len(errors) == 1 and "not a file of this folder" in errors[0].message


def test_a_folder_with_one_model_safetensors(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "final"
    folder.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copyfile(TRAINER / name, folder / name)
    report = ckptkeys.validate_path(folder)
    assert isinstance(report, WeightsFolderReport) and report.indexes == ()
    assert list(report.files) == ["model.safetensors"]
    assert [p.code for p in report.problems] == ["not-deepspeed"]
    assert "a folder of model weights (model.safetensors), 29 tensors" in report.problems[0].message


def test_torch_shards_with_their_index(tmp_path: pathlib.Path) -> None:
    """pytorch_model.bin.index.json and its .bin shards, from the pinned plain state dicts."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shard1, shard2 = "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"
    shutil.copyfile(DATA / "plain" / "state_dict.pt", folder / shard1)
    shutil.copyfile(DATA / "plain" / "ds_named_tensors.pth", folder / shard2)
    weight_map = {"0.weight": shard1, "0.bias": shard1, "1.weight": shard1, "1.bias": shard1}
    weight_map.update({"ds_version": shard2, "dp_world_size": shard2})
    total = (12 + 4 + 8 + 2) * 4 + (1 + 2) * 4
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    assert [c for _, c, _, _ in _problems(folder)] == ["not-deepspeed"]
    del weight_map["1.bias"]
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    assert ("warning", "unlisted-tensor", str(folder / shard1), "1.bias") in _problems(folder)


def test_a_torch_shard_naming_os_system_fails_as_any_file(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    pickle = security_cases._proto(2) + security_cases._call("os", "system", "true") + b"."
    (folder / "pytorch_model.bin").write_bytes(security_cases.zip_archive(security_cases._records(pickle)))
    assert ("error", "code-execution", str(folder / "pytorch_model.bin"), None) in _problems(folder)
    assert _run("validate", str(folder))[0] == 1


def test_deepspeed_saves_and_runs_are_unchanged() -> None:
    # A Trainer checkpoint-N/ holds model.safetensors and a DeepSpeed save: it stays a save.
    assert not isinstance(ckptkeys.validate_path(TRAINER / "checkpoint-2"), WeightsFolderReport)
    assert isinstance(ckptkeys.validate_path(TRAINER), ckptkeys.RunReport)
    assert isinstance(ckptkeys.validate_path(FIXTURES / "z2_bf16_ws2"), ckptkeys.ValidationReport)


def test_a_folder_of_nothing_is_still_no_checkpoint(tmp_path: pathlib.Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ckptkeys.NotACheckpointError):
        ckptkeys.validate_path(tmp_path)
    status, _, err = _run("validate", str(tmp_path))
    assert status == 2 and "holds no DeepSpeed checkpoint" in err


def test_save_on_a_weights_folder_is_a_usage_error(sharded: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="a folder of model weights, not a run folder"):
        ckptkeys.validate_path(sharded, save="checkpoint-2")


def test_what_save_pretrained_writes_is_healthy(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "whole")
    sharded = ckptkeys.validate_path(tmp_path / "sharded")
    assert isinstance(sharded, WeightsFolderReport)
    assert [p.code for p in sharded.problems] == ["not-deepspeed"]
    (index,) = sharded.indexes
    assert len(sharded.files) > 1 and set(sharded.files) == set(index.weight_map.values())
    assert index.metadata is not None
    status, out, _ = _run("inspect", str(tmp_path / "sharded"))
    assert status == 0 and f"  metadata: total_parameters={index.metadata['total_parameters']}" in out
    whole = ckptkeys.validate_path(tmp_path / "whole")
    assert isinstance(whole, WeightsFolderReport) and list(whole.files) == ["model.safetensors"]
    assert whole.tensors("model.safetensors") == {
        name: size for shard in sharded.files for name, size in sharded.tensors(shard).items()
    }


def test_reprs_are_one_line(sharded: pathlib.Path) -> None:
    report = ckptkeys.validate_path(sharded)
    assert isinstance(report, WeightsFolderReport)
    shards = len(report.files)
    assert repr(report) == f"<WeightsFolderReport {str(sharded)!r}: {shards} files, 1 index, 1 info>"
    (index,) = report.indexes
    total = _index(sharded)["metadata"]["total_size"]
    assert repr(index) == f"<WeightsIndex {INDEX!r}: 28 tensors in {shards} shards, total_size {total:,}>"
