"""The builder's info, proven by DeepSpeed itself (needs torch and DeepSpeed 0.19.8).

For each run (one and two processes, ZeRO-1 and ZeRO-2, bf16 and fp32), tests/integration/
train_and_save.py trains a tiny model with DeepSpeed on the CPU (gloo) and saves two tags: one
with ``ckptkeys.writing``'s ``universal_checkpoint_info`` in ``client_state``, one without.
Then ckptkeys' verdicts are compared with what DeepSpeed's ``ds_to_universal`` and
``zero_to_fp32`` actually do on them, and the universal output is read and validated.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import sys

import pytest

import ckptkeys
from ckptkeys.writing import universal_checkpoint_info

from .conftest import ROOT, ds_to_universal, launch_ranks

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
pytest.importorskip("torch")
zero_to_fp32 = pytest.importorskip("deepspeed.utils.zero_to_fp32")

SCRIPT = ROOT / "tests" / "integration" / "train_and_save.py"
RUNS = [(world, stage, precision) for world in (1, 2) for stage in (1, 2) for precision in ("bf16", "fp32")]
PARAMETERS = ["0.weight", "0.bias", "2.weight", "2.bias"]
MISSING_INFO = "Required universal_checkpoint_info state is missing in checkpoint"


def _train(save: pathlib.Path, world: int, stage: int, precision: str) -> None:
    launch_ranks([sys.executable, str(SCRIPT), str(save), str(stage), precision], world, output=save)


@pytest.mark.parametrize(("world", "stage", "precision"), RUNS, ids=[f"ws{w}-z{s}-{p}" for w, s, p in RUNS])
def test_builder_info_converts_and_its_absence_is_predicted(
    tmp_path: pathlib.Path, world: int, stage: int, precision: str
) -> None:
    save = tmp_path / "save"
    _train(save, world, stage, precision)

    # Before any converter runs: ckptkeys' verdicts.
    report = ckptkeys.validate_folder(save)
    tags = {tag.layout.name: tag for tag in report.tags}
    assert set(tags) == {"with_info", "without_info"}
    for tag in tags.values():
        assert tag.layout.zero_stage == stage and tag.layout.dp_world_size == world
        assert not [p for p in tag.problems if p.severity is ckptkeys.Severity.ERROR], tag.problems
    with_info = tags["with_info"].converters
    without_info = tags["without_info"].converters
    assert with_info["ds_to_universal"].ready, with_info["ds_to_universal"]
    assert not without_info["ds_to_universal"].ready
    assert without_info["ds_to_universal"].code == "no-universal-info"

    # What was saved is exactly what the builder returned.
    model_states = ckptkeys.read(save / "with_info" / "mp_rank_00_model_states.pt").data
    assert model_states[ckptkeys.UniversalKeys.UNIVERSAL_CHECKPOINT_INFO] == universal_checkpoint_info(
        tp_replicated_parameter_patterns=[r"2\.bias"], parameter_with_row_parallelism_patterns=[r"2\.weight"]
    )

    # DeepSpeed's ds_to_universal succeeds exactly where ckptkeys said ready ...
    converted = ds_to_universal(save / "with_info", tmp_path / "universal")
    assert converted.returncode == 0, converted.stderr[-3000:]
    universal = ckptkeys.validate_folder(tmp_path / "universal")
    (universal_tag,) = universal.tags
    assert universal_tag.layout.universal
    assert not [p for p in universal.all_problems if p.severity is ckptkeys.Severity.ERROR], universal.all_problems
    for name in PARAMETERS:
        assert (tmp_path / "universal" / "zero" / name / "fp32.pt").is_file(), name
        ckptkeys.read(tmp_path / "universal" / "zero" / name / "fp32.pt")

    # ... and fails, as predicted, without the info.
    refused = ds_to_universal(save / "without_info", tmp_path / "refused")
    assert refused.returncode != 0
    assert MISSING_INFO in refused.stderr

    # zero_to_fp32 agrees with its verdict on both tags.
    for tag_name, verdicts in (("with_info", with_info), ("without_info", without_info)):
        assert verdicts["zero_to_fp32"].ready, verdicts["zero_to_fp32"]
        with contextlib.redirect_stdout(io.StringIO()):
            state = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(save), tag=tag_name)
        assert sorted(state) == sorted(PARAMETERS)
