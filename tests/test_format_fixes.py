"""The red team's findings on plain files, safetensors files and weights folders (R21b), each pinned."""

from __future__ import annotations

import io
import pathlib
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pytest

import ckptkeys
from ckptkeys._check._plain_files import is_deepspeed_dict
from ckptkeys._cli._main import main

from .conftest import DATA

TRAINER_WEIGHTS = DATA / "clients" / "hf_trainer_z2_bf16" / "model.safetensors"
# Built by the red team with torch from z1_bf16_ws1's files: the model states with ds_version=0.19,
# dp_world_size="1" (and other markers of the wrong type); the BF16 optimizer states with
# ds_version=b"0.19.8", ds_config=None; the model states with every marker key removed.
REDTEAM = DATA / "redteam5"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_safetensors_under_a_deepspeed_name_is_an_error(tmp_path: pathlib.Path, name: str) -> None:
    named = tmp_path / name
    shutil.copyfile(TRAINER_WEIGHTS, named)
    with pytest.raises(ckptkeys.NotACheckpointError, match="is a safetensors file, not a torch checkpoint$"):
        ckptkeys.validate(named)
    for command in ("validate", "inspect"):
        status, out, err = _run(command, str(named))
        assert (status, out) == (2, "")
        assert err == f"ckptkeys {command}: {named}: is a safetensors file, not a torch checkpoint\n"
    # In a tag folder, the same file is the same refusal, as an unreadable-file error.
    tag = tmp_path / "global_step1"
    tag.mkdir()
    shutil.copyfile(TRAINER_WEIGHTS, tag / "mp_rank_00_model_states.pt")
    (unreadable,) = [p for p in ckptkeys.validate(tag) if p.code == "unreadable-file"]
    assert unreadable.message == "is a safetensors file, not a torch checkpoint"


@pytest.mark.parametrize("name", ["wrongtypes.pt", "optim_wrongtypes.pt"])
def test_markers_of_the_wrong_type_make_a_deepspeed_file_with_wrong_type_errors(name: str) -> None:
    path = REDTEAM / name
    assert is_deepspeed_dict(ckptkeys.read(path).data)
    problems = ckptkeys.validate(path)
    assert "not-deepspeed" not in [p.code for p in problems]
    wrong = {p.key_path for p in problems if p.code == "wrong-type"}
    assert "ds_version" in wrong
    status, out, _ = _run("validate", str(path))
    assert status == 1 and "wrong-type" in out


def test_a_file_with_every_marker_removed_stays_plain() -> None:
    """The documented limit: nothing in it tells it from a training loop's own dict."""
    path = REDTEAM / "nomarkers.pt"
    assert not is_deepspeed_dict(ckptkeys.read(path).data)
    assert [p.code for p in ckptkeys.validate(path)] == ["not-deepspeed"]


@pytest.mark.parametrize("data", [{"ds_version": 0.19}, {"dp_world_size": "1"}, {"ds_config": None}, {"param_shapes": {"a": 1}}])
def test_any_non_tensor_marker_value_counts(data: dict[str, object]) -> None:
    assert is_deepspeed_dict(data)
