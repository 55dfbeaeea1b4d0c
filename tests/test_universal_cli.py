"""``ckptkeys universal``: the summary and the tensors the loader does not restore, ``--dry-run
[--json]``, a job array, the exit statuses, errors naming the file or the option as typed."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._cli._universal import WAY_OUT
from ckptkeys._universal._write import staging_folder

from .conftest import FIXTURES

SOURCE = FIXTURES / "uc_z2_bf16_ws2"


@pytest.fixture
def save(tmp_path: pathlib.Path) -> pathlib.Path:
    """The fixture's save folder without the universal tag ds_to_universal made of it."""
    folder = tmp_path / "save"
    shutil.copytree(SOURCE / "global_step3", folder / "global_step3")
    (folder / "latest").write_text("global_step3")
    return folder


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_command_writes_the_tag_and_names_what_is_not_restored(
    save: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["universal", str(save), "-q"]) == 0
    out = save / "global_step3_universal"
    assert _files(out) == _files(SOURCE / "global_step3_universal")  # ds_to_universal's tree and names
    assert (save / "latest_universal").read_bytes() == b"global_step3_universal"
    captured = capsys.readouterr()
    assert captured.out == ""
    plan = ckptkeys.plan_universal(save)
    lines = captured.err.splitlines()
    assert lines[0] == (
        f"wrote {out} ({len(plan.files)} files, {plan.total_size} bytes of tensors and copies) "
        f"and {save / 'latest_universal'} naming it"
    )
    names = {n.name for n in plan.not_restored}
    assert names >= {"frozen.weight", "frozen.bias", "scale"}
    assert lines[1].startswith(f"DeepSpeed's universal loader does not restore {len(names)} tensor(s)")
    for item in plan.not_restored:
        assert f"  {item.name} ({item.kind}; values in {item.file})" in lines
    assert lines[-1] == f"  {WAY_OUT}"
    assert WAY_OUT.startswith("load them from the model states") and WAY_OUT.endswith("or the pretrained weights")


def test_dry_run_writes_nothing_and_json_is_the_plan(save: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(os.listdir(save))
    assert main(["universal", str(save), "--dry-run"]) == 0
    text = capsys.readouterr().out
    plan = ckptkeys.plan_universal(save)
    for file in plan.files:
        assert f"  {file.name}  {file.nbytes} bytes" in text
    assert "load them from the model states" in text
    assert main(["universal", str(save / "global_step3"), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == plan.as_dict()
    assert sorted(os.listdir(save)) == before


def test_a_job_array_then_finalize(save: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = ckptkeys.plan_universal(save)
    assert main(["universal", str(save), "-q", "--shard", "1/2"]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert line.startswith("job 1 of 2: wrote ") and "one --finalize run then checks them all" in line
    assert not (save / "global_step3_universal").exists()
    assert main(["universal", str(save), "-q", "--finalize"]) == 1  # job 2 has not run
    err = capsys.readouterr().err
    assert err.startswith(f"ckptkeys universal: {staging_folder(plan)}: nothing is published: ")
    assert "is missing (the job of" in err
    assert main(["universal", str(save), "-q", "--shard", "2/2"]) == 0
    assert main(["universal", str(save), "-q", "--shard", f"{len(plan.params) + 1}/{len(plan.params) + 1}"]) == 0
    assert "has no parameter to write" in capsys.readouterr().err
    assert main(["universal", str(save), "-q", "--finalize"]) == 0
    assert capsys.readouterr().err.startswith("checked the jobs' files, wrote ")
    assert _files(save / "global_step3_universal") == _files(SOURCE / "global_step3_universal")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json"], "ckptkeys universal: --json goes with --dry-run"),
        (["--shard", "0/2"], "ckptkeys universal: --shard '0/2': expected K/N with 1 <= K <= N, e.g. 3/8"),
        (["--shard", "1/2", "--finalize"], "ckptkeys universal: --finalize: not allowed with argument --shard"),
        (["--tag", "global_step9"], "global_step9"),
    ],
)
def test_usage_errors_name_the_option_as_typed(
    save: pathlib.Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["universal", str(save), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err
    assert sorted(os.listdir(save)) == ["global_step3", "latest"]


def test_an_existing_tag_needs_overwrite(save: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["universal", str(save), "-q"]) == 0
    capsys.readouterr()
    assert main(["universal", str(save), "-q"]) == 2
    out = save / "global_step3_universal"
    assert capsys.readouterr().err == f"ckptkeys universal: {out}: already exists; --overwrite replaces it\n"
    assert main(["universal", str(save), "-q", "--overwrite", "--no-fsync"]) == 0


def test_a_missing_checkpoint_and_a_read_only_folder(
    save: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["universal", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith(f"ckptkeys universal: {tmp_path / 'nothing'}: does not exist")
    if os.geteuid() == 0:
        pytest.skip("root writes in a read-only folder")
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        assert main(["universal", str(save), "-q", "--output-folder", str(target / "out")]) == 74
        assert "is read-only" in capsys.readouterr().err
    finally:
        target.chmod(0o700)


def test_json_errors_are_documents(save: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["universal", str(save / "nope"), "--dry-run", "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["command"] == "universal" and document["exit"]["status"] == 2
