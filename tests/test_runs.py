"""Runs: the folders frameworks write (Trainer output_dir, Lightning dirpath, Accelerate checkpoints/).

tests/data/clients holds real Hugging Face Trainer and Lightning output (see its README); an
Accelerate run is built here from a real DeepSpeed save the way Accelerate lays it out.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys import Severity

from .conftest import DATA, FIXTURES

CLIENTS = DATA / "clients"
TRAINER = CLIENTS / "hf_trainer_z2_bf16"
LIGHTNING = CLIENTS / "lightning_z2"
TRAINER_FILES = {"trainer_state.json", "training_args.bin", "rng_state.pth", "model.safetensors", "config.json"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", *args], capture_output=True, text=True, env=env, check=False
    )


def test_trainer_output_dir_is_a_run() -> None:
    run = ckptkeys.scan_run(TRAINER)
    assert [(s.name, s.step) for s in run.saves] == [("checkpoint-4", 4), ("checkpoint-2", 2)]
    assert run.framework == "transformers"
    assert set(run.framework_files) == {"model.safetensors", "config.json", "generation_config.json", "training_args.bin"}
    report = ckptkeys.validate_run(TRAINER)
    (newest,) = report.saves
    assert newest.layout.path == str(TRAINER / "checkpoint-4")
    assert newest.layout.framework == "transformers"
    assert set(newest.layout.framework_files) >= TRAINER_FILES
    # The Trainer's files are listed as its own, never read or flagged.
    for problem in report.all_problems:
        assert not any(name in (problem.file or "") for name in TRAINER_FILES), problem
    assert [t.layout.name for t in newest.tags] == ["global_step4"]


def test_lightning_dirpath_is_a_run_and_its_client_state_one_problem() -> None:
    run = ckptkeys.scan_run(LIGHTNING)
    assert [(s.name, s.step) for s in run.saves] == [("epoch=0-step=4.ckpt", 4), ("epoch=0-step=2.ckpt", 2)]
    assert run.framework == "lightning"
    problems = ckptkeys.validate(LIGHTNING)
    assert [p.code for p in problems if p.code == "client-state-key"] == []
    (framework,) = [p for p in problems if p.code == "framework-client-state"]
    assert framework.severity is Severity.INFO
    for key in ("epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks", "lr_schedulers"):
        assert key in framework.message


def test_all_saves_and_one_save() -> None:
    every = ckptkeys.validate_run(TRAINER, all_saves=True)
    assert [r.layout.path for r in every.saves] == [str(TRAINER / "checkpoint-4"), str(TRAINER / "checkpoint-2")]
    one = ckptkeys.validate_run(TRAINER, save="checkpoint-2")
    assert [r.layout.path for r in one.saves] == [str(TRAINER / "checkpoint-2")]
    with pytest.raises(KeyError):
        ckptkeys.validate_run(TRAINER, save="checkpoint-3")


def _accelerate_run(root: pathlib.Path, count: int) -> pathlib.Path:
    """Accelerate's save_state layout: checkpoints/checkpoint_N/{pytorch_model/, latest, random_states_0.pkl}."""
    checkpoints = root / "checkpoints"
    for n in range(count):
        save = checkpoints / f"checkpoint_{n}"
        shutil.copytree(FIXTURES / "z2_bf16_ws2" / "global_step3", save / "pytorch_model")
        (save / "latest").write_text("pytorch_model")
        (save / "random_states_0.pkl").write_bytes(b"\x80\x04N.")
    return checkpoints


def test_accelerate_checkpoints_folder(tmp_path: pathlib.Path) -> None:
    checkpoints = _accelerate_run(tmp_path, 3)
    run = ckptkeys.scan_run(checkpoints)
    assert [s.name for s in run.saves] == ["checkpoint_2", "checkpoint_1", "checkpoint_0"]
    assert run.framework == "accelerate"
    report = ckptkeys.validate_run(checkpoints)
    (save,) = report.saves
    assert save.layout.framework == "accelerate" and save.layout.framework_files == ("random_states_0.pkl",)
    assert save.layout.latest == "pytorch_model"
    assert not [p for p in report.all_problems if p.severity is Severity.ERROR]
    reason = save.tags[0].converters["ds_to_universal"].reason or ""
    assert reason.startswith("run ds_to_universal with --inject_missing_state") and "Accelerate" in reason


def test_saves_without_a_step_go_by_time(tmp_path: pathlib.Path) -> None:
    run_dir = tmp_path / "run"
    for name, when in (("old", 1_000_000), ("new", 2_000_000), ("middle", 1_500_000)):
        shutil.copytree(FIXTURES / "z1_bf16_ws1", run_dir / name)
        os.utime(run_dir / name / "latest", (when, when))
    assert [s.name for s in ckptkeys.scan_run(run_dir).saves] == ["new", "middle", "old"]
    assert ckptkeys.scan_run(run_dir).framework is None


def test_trainer_step_from_trainer_state(tmp_path: pathlib.Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(TRAINER / "checkpoint-2", run_dir / "second")
    shutil.copytree(TRAINER / "checkpoint-4", run_dir / "first")
    assert [(s.name, s.step) for s in ckptkeys.scan_run(run_dir).saves] == [("first", 4), ("second", 2)]


def test_a_folder_without_saves_is_no_run(tmp_path: pathlib.Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ckptkeys.NotACheckpointError, match="no save folders"):
        ckptkeys.scan_run(tmp_path)
    with pytest.raises(ckptkeys.NotACheckpointError):
        ckptkeys.validate(tmp_path)


# -- the command -----------------------------------------------------------------------------------


def test_inspect_a_run_lists_the_saves_and_reports_the_newest() -> None:
    result = cli("inspect", str(TRAINER))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "run of 2 saves, written by Hugging Face Trainer, newest first" in out
    assert out.index("checkpoint-4  step 4") < out.index("checkpoint-2  step 2")
    assert "Tag global_step4:" in out and "Tag global_step2:" not in out
    every = cli("validate", "--all", str(TRAINER)).stdout
    assert "Tag global_step4:" in every and "Tag global_step2:" in every
    one = cli("inspect", "--save", "checkpoint-2", str(TRAINER)).stdout
    assert "Tag global_step2:" in one and "Tag global_step4:" not in one


def test_run_json_document() -> None:
    result = cli("validate", "--json", str(LIGHTNING))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "run" and document["framework"] == "lightning"
    assert [(s["name"], s["step"]) for s in document["saves"]] == [("epoch=0-step=4.ckpt", 4), ("epoch=0-step=2.ckpt", 2)]
    newest, older = document["saves"]
    assert older["report"] is None
    assert newest["report"]["kind"] == "save" and newest["report"]["latest"] == "checkpoint"
    assert [t["name"] for t in newest["report"]["tags"]] == ["checkpoint"]
    assert document["exit"] == {"status": 0, "meaning": "no error problem (warnings and info may exist)"}
    # framework-client-state and the two converters' readiness: information, not warnings
    assert (document["summary"]["warning"], document["summary"]["info"]) == (0, 3)


def _error_document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr  # the line on stderr stays
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["exit"]["status"] == 2 and "usage error" in document["exit"]["meaning"]
    assert document["error"]["message"]
    return document


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_every_outcome_under_json_is_one_document(command: str, tmp_path: pathlib.Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    cases = {
        "missing": (str(tmp_path / "nope"),),
        "empty": (str(tmp_path / "empty"),),
        "junk": (str(junk),),
        "no such save": ("--save", "checkpoint-3", str(TRAINER)),
        "--all off a run": ("--all", str(FIXTURES / "z2_bf16_ws2")),
        "bad argument": ("--frobnicate", str(TRAINER)),
        "no path": (),
    }
    for case, args in cases.items():
        document = _error_document(cli(command, "--json", *args))
        assert document["command"] == command, case
    assert "checkpoint-4, checkpoint-2" in _error_document(cli(command, "--json", *cases["no such save"]))["error"][
        "message"
    ]
    assert _error_document(cli(command, "--json", *cases["missing"]))["error"]["type"] == "ReadError"
    broken = cli(command, "--json", str(DATA / "broken" / "partition_count"))
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["exit"] == {"status": 1, "meaning": "at least one error problem"}
