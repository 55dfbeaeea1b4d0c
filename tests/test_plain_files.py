"""Torch files that are not DeepSpeed checkpoints: said plainly, listed, exit 0; security as for any file."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

import ckptkeys
from ckptkeys._check._plain_files import MARKERS, describe, is_deepspeed_dict
from ckptkeys._cli._main import main
from ckptkeys._read._torch import tensors_in

from . import security_cases
from .conftest import DATA, FIXTURES
from .plain_cases import EXPECTED, write_plain_files

PLAIN = DATA / "plain"
TRAINER = DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-2"
MODEL_STATES = FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt"
OPTIM_STATES = FIXTURES / "z2_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _codes(path: pathlib.Path) -> list[str]:
    return [p.code for p in ckptkeys.validate(path)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_plain_file_is_one_info_saying_what_it_is(name: str) -> None:
    problems = ckptkeys.validate(PLAIN / name)
    plain = [p for p in problems if p.code == "not-deepspeed"]
    assert len(plain) == 1
    assert plain[0].severity == "info"
    assert plain[0].message == f"not a DeepSpeed checkpoint: {EXPECTED[name]}"
    assert plain[0].file == str(PLAIN / name)
    assert not [p for p in problems if p.code in ("missing-key", "wrong-type", "client-state-key", "unknown-key")]


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_the_command_says_it_and_exits_0(command: str) -> None:
    status, out, err = _run(command, str(PLAIN / "state_dict.pt"))
    assert (status, err) == (0, "")
    assert "not-deepspeed" in out and "a plain state dict of 4 tensors" in out
    assert "client_state?" not in out and "missing-key" not in out


def test_inspect_lists_the_tensors_by_name_dtype_and_shape() -> None:
    status, out, _ = _run("inspect", str(PLAIN / "state_dict.pt"))
    assert status == 0
    for line in (
        "0.weight: Tensor[float32, [4, 3]]",
        "0.bias: Tensor[float32, [4]]",
        "1.weight: Tensor[float32, [2, 4]]",
    ):
        assert line in out
    # Nested state dicts come with --depth, as for DeepSpeed files.
    assert "model_state_dict: OrderedDict[4]" in _run("inspect", str(PLAIN / "training.pt"))[1]
    assert "0.weight: Tensor[float32, [4, 3]]" not in _run("inspect", str(PLAIN / "training.pt"))[1]
    assert "0.weight: Tensor[float32, [4, 3]]" in _run("inspect", "--depth", "2", str(PLAIN / "training.pt"))[1]
    # A file that holds no dict is one line saying what it holds.
    assert "    Tensor[float32, [2, 3]]" in _run("inspect", str(PLAIN / "tensor.pt"))[1]


def test_json_lists_the_file_its_format_and_the_info() -> None:
    status, out, _ = _run("inspect", "--json", str(PLAIN / "state_dict_legacy.pt"))
    document = json.loads(out)
    assert status == 0 and document["exit"]["status"] == 0
    (entry,) = document["files"]
    assert entry["format"] == "legacy"
    assert entry["kind"] is None
    assert entry["top_level_keys"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert entry["tensors"] == {"float32": {"count": 4, "numel": 26, "bytes": 104}}
    assert [p["code"] for p in document["problems"]] == ["not-deepspeed"]
    assert document["summary"] == {"error": 0, "warning": 0, "info": 1, "hidden": 0}


def test_a_pickled_module_keeps_its_security_warning() -> None:
    codes = _codes(PLAIN / "linear.pt")
    assert sorted(codes) == ["not-deepspeed", "unknown-global"]
    status, out, _ = _run("inspect", str(PLAIN / "linear.pt"))
    assert status == 0
    assert "torch.serialization.add_safe_globals([Linear])" in out


def test_a_plain_file_naming_os_system_still_fails(tmp_path: pathlib.Path) -> None:
    pickle = security_cases._proto(2) + security_cases._call("os", "system", "true") + b"."
    path = tmp_path / "model.pt"
    path.write_bytes(security_cases.zip_archive(security_cases._records(pickle, b"model")))
    problems = ckptkeys.validate(path)
    assert [p.code for p in problems if p.severity == "error"] == ["code-execution"]
    assert "a pickled object of class os.system" in [p for p in problems if p.code == "not-deepspeed"][0].message
    status, out, _ = _run("validate", str(path))
    assert status == 1
    assert "code-execution" in out


@pytest.mark.parametrize("source", [MODEL_STATES, OPTIM_STATES])
def test_a_renamed_deepspeed_file_is_still_checked_as_one(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    renamed = tmp_path / "model.pt"
    shutil.copyfile(source, renamed)
    data = ckptkeys.read(renamed).data
    assert is_deepspeed_dict(data)
    assert "not-deepspeed" not in _codes(renamed)

    def said(path: pathlib.Path) -> list[tuple[str, str, str | None]]:
        return [(p.code, p.message, p.key_path) for p in ckptkeys.validate(path)]

    assert said(renamed) == said(source)


def test_a_renamed_deepspeed_file_missing_a_key_still_gets_missing_key(tmp_path: pathlib.Path) -> None:
    data = ckptkeys.read(MODEL_STATES).data
    del data["param_shapes"]
    assert is_deepspeed_dict(data)
    assert "missing-key" in [p.code for p in ckptkeys.validate(data)]


def test_a_deepspeed_file_name_is_checked_whatever_it_holds(tmp_path: pathlib.Path) -> None:
    named = tmp_path / "mp_rank_00_model_states.pt"
    shutil.copyfile(PLAIN / "state_dict.pt", named)
    codes = _codes(named)
    assert "not-deepspeed" not in codes and "missing-key" in codes


@pytest.mark.parametrize(
    ("data", "deepspeed"),
    [
        ({"ds_version": "0.19.8"}, True),
        ({"ds_config": {"train_batch_size": 8}}, True),
        ({"dp_world_size": 2, "weight": None}, True),
        ({"dp_world_size": "2"}, True),  # of the wrong type: a wrong-type error, not a plain file
        # A renamed model states stripped of every key all saves hold, keeping those only some hold
        # (the re-check red team's nomarkers.pt): still DeepSpeed's.
        ({"module": {}, "optimizer": None, "random_ltd": None, "data_sampler": None, "global_samples": 8}, True),
        ({"shared_params": {}}, True),
        ({"module": {}, "optimizer": {}, "lr_scheduler": {}, "optimizer_state_dict": {}, "global_steps": 3}, False),
        ({}, False),
        ([{"ds_version": "0.19.8"}], False),
    ],
)
def test_the_rule(data: Any, deepspeed: bool) -> None:
    assert is_deepspeed_dict(data) is deepspeed


def test_markers_come_from_the_schema() -> None:
    assert {"ds_version", "ds_config", "param_shapes", "dp_world_size", "buffer_names"} <= set(MARKERS)
    assert {"shared_params", "data_sampler", "random_ltd", "global_samples", "universal_checkpoint_info"} <= set(MARKERS)
    assert not {"module", "optimizer", "lr_scheduler", "optimizer_state_dict", "global_steps"} & set(MARKERS)


def test_describe_of_other_values() -> None:
    assert describe({}) == "an empty dict"
    assert describe(3) == "a pickled int"
    assert describe(("a",)) == "a tuple of 1 item (0 tensors)"


def test_trainer_side_files_read_sensibly() -> None:
    rng = ckptkeys.validate(TRAINER / "rng_state.pth")
    assert [p.message for p in rng if p.code == "not-deepspeed"] == [
        "not a DeepSpeed checkpoint: a dict of 3 keys (1 tensor)"
    ]
    assert {p.severity for p in rng} <= {"info", "warning"}
    args = ckptkeys.validate(TRAINER / "training_args.bin")
    assert [p.message for p in args if p.code == "not-deepspeed"] == [
        "not a DeepSpeed checkpoint: a pickled object of class transformers.training_args.TrainingArguments"
    ]
    assert _run("validate", str(TRAINER / "training_args.bin"))[0] == 0


# -- against torch (3.11) --------------------------------------------------------------------------


def _torch_tensors(torch: Any, value: Any) -> int:
    seen: set[int] = set()
    stack = [value]
    found = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            found += 1
        elif isinstance(item, dict):
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
        elif isinstance(item, torch.nn.Module):
            stack += list(item.state_dict().values())
    return found


def test_pinned_files_are_what_torch_writes_and_reads(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    write_plain_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPECTED)
    for name in EXPECTED:
        fresh = ckptkeys.read(tmp_path / name)
        pinned = ckptkeys.read(PLAIN / name)
        assert describe(fresh.data) == describe(pinned.data) == EXPECTED[name]
        loaded = torch.load(PLAIN / name, weights_only=name != "linear.pt")
        assert _torch_tensors(torch, loaded) == sum(1 for _ in tensors_in(pinned.data))
        if isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            assert {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in loaded.items()} == {
                k: (v.dtype, v.shape) for k, v in pinned.data.items()
            }
