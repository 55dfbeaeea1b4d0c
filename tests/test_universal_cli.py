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


def test_what_the_command_refuses_and_its_status(
    save: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["universal", str(empty)]) == 2
    assert capsys.readouterr().err.startswith(f"ckptkeys universal: {empty}: holds no DeepSpeed checkpoint")
    uninformed = tmp_path / "z2"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", uninformed)
    assert main(["universal", str(uninformed), "-q"]) == 2  # no universal_checkpoint_info: an option resolves it
    err = capsys.readouterr().err
    assert err.startswith(f"ckptkeys universal: {uninformed / 'global_step3' / 'mp_rank_00_model_states.pt'}: ")
    assert err.endswith("; --inject-missing-state converts it (as ds_to_universal's --inject_missing_state)\n")
    assert sorted(os.listdir(uninformed)) == sorted(os.listdir(FIXTURES / "z2_bf16_ws2"))
    assert main(["universal", str(uninformed), "-q", "--inject-missing-state"]) == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["universal", str(save), "-q", "--output-folder", str(blocker), "--overwrite"]) == 2
    assert capsys.readouterr().err.endswith(f"{blocker}: is not a folder: a universal tag is a folder\n")
    assert main(["universal", str(save), "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_the_jobs_of_an_array_run_at_once(save: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three --shard jobs started together (processes: the staging folder's lock is taken for real),
    over the folder a killed whole run left; then --finalize publishes what one run writes."""
    import subprocess
    import sys

    plan = ckptkeys.plan_universal(save)
    staging = pathlib.Path(staging_folder(plan))
    (staging / "zero" / "gone.weight").mkdir(parents=True)  # a killed whole run's: no plan recorded, no lock held
    (staging / "zero" / "gone.weight" / "fp32.pt").write_bytes(b"half")
    (staging / ".ckptkeys-lock").write_bytes(b"")
    src = str(pathlib.Path(ckptkeys.__file__).parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "ckptkeys", "universal", str(save), "-q", "--shard", f"{k}/3"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in (1, 2, 3)
    ]
    for job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, err
    assert not (staging / "zero" / "gone.weight").exists()
    assert main(["universal", str(save), "-q", "--finalize"]) == 0
    assert _files(save / "global_step3_universal") == _files(SOURCE / "global_step3_universal")
    assert sorted(os.listdir(save)) == ["global_step3", "global_step3_universal", "latest", "latest_universal"]


def test_progress_shows_on_a_terminal_only(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["universal", str(save)]) == 0
    shown = terminal.getvalue()
    total = ckptkeys.plan_universal(save).total_size
    assert f"\rconverting {total / 1e9:.2f}/{total / 1e9:.2f} GB" in shown  # bytes, as export counts them
    assert "\r\033[K" in shown and shown.rindex("\r\033[K") < shown.index("wrote ")  # cleared before the summary
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["universal", str(save), "-q", "--overwrite"]) == 0
    assert "converting" not in quiet.getvalue()


@pytest.mark.parametrize("name", ["universal_z3_ws3", "universal_z3_tp2"])
def test_the_command_writes_ds_to_universals_bytes(
    name: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ZeRO-3 saves whose ds_to_universal output is stored beside them (from the z3 planner's
    fixtures): the command's files equal DeepSpeed's byte for byte, copies and written files alike."""
    source = FIXTURES.parent / name
    tag = (source / "latest").read_text().strip()
    save = tmp_path / "save"
    shutil.copytree(source / tag, save / tag)
    shutil.copy(source / "latest", save / "latest")
    assert main(["universal", str(save), "-q"]) == 0, capsys.readouterr().err
    ours, theirs = save / f"{tag}_universal", source / f"{tag}_universal"
    assert _files(ours) == _files(theirs)
    for relative in _files(theirs):
        assert (ours / relative).read_bytes() == (theirs / relative).read_bytes(), relative
    assert (save / "latest_universal").read_bytes() == (source / "latest_universal").read_bytes()


def test_paths_as_typed_name_the_same_tag_and_output(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tag/`` (a shell's completion) and ``.`` convert the tag as its name does; ``--output-folder
    out/`` gets ``latest_universal`` beside it; an output folder holding the tag (the save folder)
    is refused: ``--overwrite`` would remove the source with the old output."""
    save = tmp_path / "save"
    shutil.copytree(FIXTURES / "uc_z2_bf16_ws2" / "global_step3", save / "global_step3")
    expected = str(save / "global_step3_universal")
    assert ckptkeys.plan_universal(f"{save / 'global_step3'}{os.sep}").output == expected
    monkeypatch.chdir(save / "global_step3")
    assert ckptkeys.plan_universal(".").output == expected
    plan = ckptkeys.plan_universal(save / "global_step3", output_folder=f"{tmp_path / 'out'}{os.sep}")
    assert (plan.output, plan.latest) == (str(tmp_path / "out"), str(tmp_path / "latest_universal"))
    for holder in (save, tmp_path):
        with pytest.raises(ckptkeys.ExportError, match="holds the tag folder it converts") as caught:
            ckptkeys.plan_universal(save / "global_step3", output_folder=holder)
        assert caught.value.option == "output_folder"
    assert sorted(os.listdir(save)) == ["global_step3"]
