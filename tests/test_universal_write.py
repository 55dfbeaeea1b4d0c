"""``write_universal``: the tag staged in one hidden folder and put in place whole, ``latest_universal``
last; ``--overwrite``; job arrays (``shard``, ``finalize``) and their checks; a killed run's staging
folder cleaned, a live one left alone; the refusals. On hand-made plans over a fixture's real
storage records (``tests/universal_hand.py``), so the writer is tested apart from the planner."""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Any

import pytest

from ckptkeys import ExportError, OutputExistsError
from ckptkeys._export._pt import pt_size
from ckptkeys._export._types import OptionError
from ckptkeys._export._write import OutputFolderError
from ckptkeys._universal._types import UniversalPlan
from ckptkeys._universal._write import LOCK_FILE, PLAN_FILE, plan_identity, staging_folder, write_universal

from .conftest import FIXTURES
from .universal_hand import expected_values, hand_plan, loaded_values

SOURCE = FIXTURES / "uc_z2_bf16_ws2"


@pytest.fixture
def save(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the fixture's save folder without its universal tag (what the writer makes)."""
    folder = tmp_path / "save"
    shutil.copytree(SOURCE / "global_step3", folder / "global_step3")
    (folder / "latest").write_text("global_step3")
    return folder


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(plan: UniversalPlan) -> list[str]:
    return sorted(f.name for f in plan.files)


def _size(plan: UniversalPlan, name: str) -> int:
    file = next(f for f in plan.files if f.name == name)
    return file.nbytes if file.copy_of is not None else pt_size(file.content, archive=name.rsplit("/")[-1][:-3])


def _hidden(save: pathlib.Path) -> list[str]:
    return sorted(n for n in os.listdir(save) if n.startswith("."))


def test_the_tag_appears_whole_and_latest_universal_names_it(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    seen: list[tuple[int, int]] = []
    written = write_universal(plan, progress=lambda done, total: seen.append((done, total)))
    out = pathlib.Path(plan.output)
    assert out == save / "global_step3_universal"
    assert sorted(_tree(out)) == _names(plan)  # DeepSpeed's files only: no lock, no plan identity
    assert written == [str(out / f.name) for f in plan.files] + [plan.latest]
    assert (save / "latest_universal").read_bytes() == b"global_step3_universal"  # as ds_to_universal: no newline
    assert (save / "latest").read_text() == "global_step3"
    for file in plan.files:
        assert (out / file.name).stat().st_size == _size(plan, file.name), file.name
        if file.copy_of is not None:
            assert (out / file.name).read_bytes() == pathlib.Path(file.copy_of).read_bytes()
            assert (out / file.name).stat().st_mtime_ns == os.stat(file.copy_of).st_mtime_ns  # as shutil.copy2
    assert _hidden(save) == []  # the staging folder went into place
    assert seen[-1] == (plan.total_size, plan.total_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_written_files_load_with_torch_as_planned(save: pathlib.Path) -> None:
    pytest.importorskip("torch")
    plan = hand_plan(save / "global_step3")
    write_universal(plan, fsync=False)
    expected = expected_values(plan)
    for name, values in expected.items():
        assert loaded_values(pathlib.Path(plan.output) / name) == values, name


def test_an_existing_tag_is_refused_without_overwrite(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    out = pathlib.Path(plan.output)
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError) as caught:
        write_universal(plan)
    assert caught.value.option == "overwrite" and caught.value.path == str(out)
    assert _tree(out) == {"mine.txt": b"keep"}
    assert not (save / "latest_universal").exists() and _hidden(save) == []


def test_overwrite_replaces_the_old_tag_whole(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    out = pathlib.Path(plan.output)
    write_universal(plan)
    new = _tree(out)
    (out / "zero" / "old_param").mkdir()
    (out / "zero" / "old_param" / "fp32.pt").write_bytes(b"old")
    (save / "latest_universal").write_text("global_step3_universal")
    write_universal(hand_plan(save / "global_step3"), overwrite=True)
    assert _tree(out) == new  # nothing of the old tag is left in it
    assert (save / "latest_universal").read_bytes() == b"global_step3_universal"
    assert _hidden(save) == []


def test_the_renames_come_in_order_latest_last(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over an old tag: latest_universal (naming it) removed, the old moved aside, the new renamed
    in, latest_universal renamed in, the old removed. Never a latest naming a missing folder."""
    plan = hand_plan(save / "global_step3")
    write_universal(plan)
    latest = plan.latest
    events: list[str] = []
    rename, replace, unlink, rmtree = os.rename, os.replace, os.unlink, shutil.rmtree

    def where(path: Any) -> str:
        return os.path.relpath(os.fspath(path), save)

    def logged_rename(a: Any, b: Any) -> None:
        events.append(f"rename {where(a)} -> {where(b)}")
        rename(a, b)

    def logged_replace(a: Any, b: Any) -> None:
        if os.path.dirname(os.fspath(b)) == str(save):
            events.append(f"replace -> {where(b)}")
        replace(a, b)

    def logged_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path) == latest:
            events.append("unlink latest_universal")
        unlink(path, *args, **kwargs)

    def logged_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        events.append(f"rmtree {where(path)}")
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "rename", logged_rename)
    monkeypatch.setattr(os, "replace", logged_replace)
    monkeypatch.setattr(os, "unlink", logged_unlink)
    monkeypatch.setattr(shutil, "rmtree", logged_rmtree)
    write_universal(hand_plan(save / "global_step3"), overwrite=True)
    assert events == [
        "unlink latest_universal",
        "rename global_step3_universal -> .global_step3_universal.ckptkeys-old",
        "rename .global_step3_universal.ckptkeys-partial -> global_step3_universal",
        "replace -> latest_universal",
        "rmtree .global_step3_universal.ckptkeys-old",
    ]


def test_latest_universal_naming_another_tag_is_replaced_not_removed(save: pathlib.Path) -> None:
    (save / "latest_universal").write_text("global_step1_universal")
    plan = hand_plan(save / "global_step3", save / "elsewhere" / "converted")
    write_universal(plan)
    assert (save / "elsewhere" / "latest_universal").read_bytes() == b"converted"
    assert (save / "latest_universal").read_text() == "global_step1_universal"  # another folder's pointer


def test_a_job_array_writes_what_one_run_writes(save: pathlib.Path, tmp_path: pathlib.Path) -> None:
    whole = hand_plan(save / "global_step3", tmp_path / "whole" / "global_step3_universal")
    write_universal(whole)
    plan = hand_plan(save / "global_step3")
    staging = pathlib.Path(staging_folder(plan))
    mine: dict[int, list[str]] = {}
    for k in (2, 1, 3):  # in any order
        written = write_universal(plan, shard=(k, 3))
        mine[k] = sorted(os.path.relpath(p, staging) for p in written)
        assert not os.path.exists(plan.output) and not os.path.exists(plan.latest)
    assert plan.params == ("p0", "p1", "p2", "p3")
    assert mine[1] == sorted(f.name for f in plan.files if f.param in ("p0", "p3"))  # parameters 1 and 4 of 4
    assert "zero/p0/exp_avg_sq.pt" in mine[1] and mine[2] == sorted(f.name for f in plan.files if f.param == "p1")
    assert sorted(f for files in mine.values() for f in files) == sorted(f.name for f in plan.files if f.param)
    assert (staging / PLAN_FILE).read_text() == plan_identity(plan)
    write_universal(plan, finalize=True)
    assert _tree(pathlib.Path(plan.output)) == _tree(tmp_path / "whole" / "global_step3_universal")
    assert (save / "latest_universal").read_bytes() == b"global_step3_universal"
    assert _hidden(save) == []


def test_more_jobs_than_parameters_write_nothing(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3", params=2)
    assert write_universal(plan, shard=(5, 7)) == []


@pytest.mark.parametrize("damage", ["missing", "truncated", "grown"])
def test_finalize_refuses_a_shard_file_not_as_planned_naming_it(save: pathlib.Path, damage: str) -> None:
    plan = hand_plan(save / "global_step3")
    for k in (1, 2):
        write_universal(plan, shard=(k, 2))
    target = pathlib.Path(staging_folder(plan)) / "zero" / "p1" / "exp_avg.pt"
    if damage == "missing":
        target.unlink()
    else:
        data = target.read_bytes()
        target.write_bytes(data[:-1] if damage == "truncated" else data + b"\0")
    before = _tree(pathlib.Path(staging_folder(plan)))
    with pytest.raises(ExportError) as caught:
        write_universal(plan, finalize=True)
    message = str(caught.value)
    assert "zero/p1/exp_avg.pt" in message and f"1 of {len([f for f in plan.files if f.param])} files" in message
    assert ("is missing" in message) == (damage == "missing")
    assert not os.path.exists(plan.output) and not os.path.exists(plan.latest)
    assert _tree(pathlib.Path(staging_folder(plan))) == before  # the other jobs' files stay for a rerun
    write_universal(plan, shard=(2, 2))  # the job rerun: then finalize publishes
    write_universal(plan, finalize=True)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)


def test_finalize_refuses_another_plans_staging(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    for k in (1, 2):
        write_universal(plan, shard=(k, 2))
    other = hand_plan(save / "global_step3", params=3)
    assert staging_folder(other) == staging_folder(plan) and plan_identity(other) != plan_identity(plan)
    with pytest.raises(ExportError) as caught:
        write_universal(other, finalize=True)
    assert caught.value.path == os.path.join(staging_folder(plan), PLAN_FILE)
    assert "records another plan" in caught.value.reason
    with pytest.raises(ExportError, match="records another plan"):  # a job of the other plan, too
        write_universal(other, shard=(1, 2))
    write_universal(other, shard=(1, 2), overwrite=True)  # starts the staging folder afresh
    assert (pathlib.Path(staging_folder(plan)) / PLAN_FILE).read_text() == plan_identity(other)
    with pytest.raises(ExportError, match="zero/p1/fp32.pt is missing"):
        write_universal(other, finalize=True)


def test_the_identity_follows_the_sources_not_where_they_are_mounted(
    save: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    elsewhere = tmp_path / "mounted" / "save"
    shutil.copytree(save, elsewhere)
    assert plan_identity(hand_plan(save / "global_step3")) == plan_identity(hand_plan(elsewhere / "global_step3"))
    with open(elsewhere / "global_step3" / "mp_rank_00_model_states.pt", "ab") as grown:
        grown.write(b"\0")
    assert plan_identity(hand_plan(save / "global_step3")) != plan_identity(hand_plan(elsewhere / "global_step3"))


def test_finalize_without_shard_jobs_is_refused(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    with pytest.raises(ExportError, match="no shard job has run") as caught:
        write_universal(plan, finalize=True)
    assert caught.value.option == "finalize"
    assert _hidden(save) == []


def test_a_killed_runs_staging_is_cleaned_by_the_next_run(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    staging = pathlib.Path(staging_folder(plan))
    (staging / "zero" / "p0").mkdir(parents=True)
    (staging / "zero" / "p0" / "fp32.pt").write_bytes(b"half a file")
    (staging / "zero" / "p0" / ".tmp-exp_avg.pt.0123456789ab").write_bytes(b"half")
    (staging / "zero" / "stray").mkdir()
    (staging / LOCK_FILE).write_bytes(b"")  # its lock: no process holds it any more
    write_universal(plan)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)
    assert _hidden(save) == []


def test_a_staging_folder_another_run_holds_is_left_alone(save: pathlib.Path) -> None:
    import fcntl

    plan = hand_plan(save / "global_step3")
    staging = pathlib.Path(staging_folder(plan))
    staging.mkdir()
    (staging / "theirs.pt").write_bytes(b"being written")
    with open(staging / LOCK_FILE, "wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another open file: as another process's lock
        with pytest.raises(ExportError, match="is being written by another run"):
            write_universal(plan)
        with pytest.raises(ExportError, match="is being written by another run"):
            write_universal(plan, overwrite=True)
        fcntl.flock(held.fileno(), fcntl.LOCK_SH)  # a job of a job array
        with pytest.raises(ExportError, match="is being written by a job of a job array"):
            write_universal(plan, finalize=True)
        assert (staging / "theirs.pt").read_bytes() == b"being written"
    assert not os.path.exists(plan.output)


def test_a_source_truncated_after_planning_is_refused_naming_it(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    victim = save / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError) as caught:
        write_universal(plan)
    assert caught.value.path == str(victim) and "is truncated" in caught.value.reason
    assert not os.path.exists(plan.output) and not os.path.exists(plan.latest) and _hidden(save) == []


def test_a_copied_file_changed_after_planning_is_refused_naming_it(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    victim = save / "global_step3" / "mp_rank_00_model_states.pt"
    with open(victim, "ab") as grown:
        grown.write(b"\0")
    with pytest.raises(ExportError) as caught:
        write_universal(plan)
    assert caught.value.path == str(victim) and "changed since it was read" in caught.value.reason
    assert not os.path.exists(plan.output) and _hidden(save) == []


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"shard": (1, 2), "finalize": True}, "finalize"),
        ({"shard": (0, 2)}, "shard"),
        ({"shard": (3, 2)}, "shard"),
        ({"shard": "1/2"}, "shard"),
        ({"shard": (1, 2, 3)}, "shard"),
    ],
)
def test_bad_options_are_refused_naming_them(save: pathlib.Path, kwargs: dict[str, Any], option: str) -> None:
    plan = hand_plan(save / "global_step3")
    with pytest.raises(OptionError) as caught:
        write_universal(plan, **kwargs)
    assert caught.value.option == option and isinstance(caught.value, ValueError)
    assert _hidden(save) == [] and not os.path.exists(plan.output)


def test_an_output_path_that_is_a_file_is_refused(save: pathlib.Path) -> None:
    plan = hand_plan(save / "global_step3")
    pathlib.Path(plan.output).write_text("a file")
    for overwrite in (False, True):  # the path is wrong either way: no overwrite would make it a folder
        with pytest.raises(OutputFolderError) as caught:
            write_universal(plan, overwrite=overwrite)
        assert caught.value.option == "output_folder" and caught.value.path == plan.output
    assert pathlib.Path(plan.output).read_text() == "a file"


def test_an_output_folder_beneath_a_file_is_refused(save: pathlib.Path) -> None:
    (save / "blocker").write_text("")
    plan = hand_plan(save / "global_step3", save / "blocker" / "out")
    with pytest.raises(OutputFolderError, match="cannot be created"):
        write_universal(plan)


def test_an_interrupted_run_leaves_nothing(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal's exception while a file is written: the staging folder goes, nothing is published."""
    plan = hand_plan(save / "global_step3")
    calls = 0

    def interrupted(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_universal(plan, progress=interrupted)
    assert _hidden(save) == [] and not os.path.exists(plan.output) and not os.path.exists(plan.latest)


def test_universal_plans_and_writes_in_one_call(save: pathlib.Path) -> None:
    import ckptkeys

    for k in (1, 2):
        plan = ckptkeys.universal(save, shard=(k, 2), fsync=False)
        assert not os.path.exists(plan.output)
    plan = ckptkeys.universal(save / "global_step3", finalize=True)
    assert plan == ckptkeys.plan_universal(save)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)
    assert (save / "latest_universal").read_bytes() == b"global_step3_universal"
    with pytest.raises(OutputExistsError):
        ckptkeys.universal(save)
    assert ckptkeys.universal(save, overwrite=True, output_folder=save / "again").output == str(save / "again")


def test_where_the_file_system_has_no_locks(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lustre without -o flock, some FUSE, Windows: a folder this run made is used, one it finds
    is never emptied; a job array agrees by the plan's identity, finalize drops stray temporary files."""
    from ckptkeys._universal import _write

    monkeypatch.setattr(_write, "_lock", lambda fd, exclusive, wait: None)
    plan = hand_plan(save / "global_step3")
    staging = pathlib.Path(staging_folder(plan))
    write_universal(plan)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)
    staging.mkdir()
    (staging / "zero").mkdir()
    with pytest.raises(OutputFolderError, match="cannot be locked"):
        write_universal(plan, overwrite=True)
    with pytest.raises(OutputFolderError, match="holds files of a run that recorded no plan"):
        write_universal(plan, shard=(1, 2), overwrite=True)
    assert (staging / "zero").is_dir()
    shutil.rmtree(staging)
    for k in (1, 2):
        write_universal(plan, shard=(k, 2), overwrite=True)
    stray = staging / "zero" / "p0" / ".tmp-fp32.pt.0123456789ab"
    stray.write_bytes(b"a killed job's")
    with pytest.raises(ExportError, match="records another plan"):
        write_universal(hand_plan(save / "global_step3", params=3), finalize=True, overwrite=True)
    write_universal(plan, finalize=True, overwrite=True)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)
    assert _hidden(save) == []


def test_an_interrupted_finalize_runs_again(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while it writes its own files, or once they are written and before the renames
    (where signals are not held): the jobs' files, the lock and the plan stay, and it runs again."""
    from ckptkeys._universal import _write

    plan = hand_plan(save / "global_step3")
    for k in (1, 2):
        write_universal(plan, shard=(k, 2))

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    staging = pathlib.Path(staging_folder(plan))
    with pytest.raises(KeyboardInterrupt):
        write_universal(plan, finalize=True, progress=interrupted)
    assert (staging / LOCK_FILE).exists() and (staging / PLAN_FILE).exists() and not os.path.exists(plan.output)
    with monkeypatch.context() as patched:
        patched.setattr(_write, "_latest_temp", interrupted)
        with pytest.raises(KeyboardInterrupt):
            write_universal(plan, finalize=True)
    assert (staging / LOCK_FILE).exists() and (staging / PLAN_FILE).exists() and not os.path.exists(plan.output)
    write_universal(plan, finalize=True)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan) and _hidden(save) == []


def test_every_file_is_on_disk_before_the_tag_is_published(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole run flushes its files in a second thread while it writes the next: every one of
    them is flushed (fsync) before the staging folder is renamed into place, and a job's before
    its rename; ``fsync=False`` flushes none."""
    import ckptkeys._universal._write as write

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    published: list[set[str]] = []
    real_move = write._move

    def move(source: str, target: str) -> None:
        if source == staging_folder(plan):
            published.append({os.path.relpath(p, source) for p in synced if p.startswith(source + os.sep)})
        real_move(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(write, "_move", move)
    plan = hand_plan(save / "global_step3")
    write_universal(plan)
    assert len(published) == 1  # (its folders are flushed too)
    assert {os.path.join(*f.name.split("/")) for f in plan.files} <= published[0]
    shutil.rmtree(plan.output)
    os.unlink(plan.latest)
    synced.clear()
    write_universal(plan, fsync=False)
    assert synced == []


def test_a_failed_flush_names_the_file_and_publishes_nothing(
    save: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.realpath(f"/proc/self/fd/{fd}").endswith("exp_avg.pt"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    plan = hand_plan(save / "global_step3")
    with pytest.raises(OutputFolderError, match=r"exp_avg\.pt: cannot be written: Input/output error"):
        write_universal(plan)
    assert not os.path.exists(plan.output) and not os.path.exists(plan.latest)
    assert _hidden(save) == []


def test_a_killed_runs_latest_universal_temporary_file_goes(save: pathlib.Path) -> None:
    """A SIGKILL while the new ``latest_universal`` waits for the renames leaves it under its
    temporary name; the next run removes it (never one another process holds locked)."""
    from ckptkeys._read._files import create_new, discard_temp

    dead = save / ".tmp-latest_universal.0123456789ab"
    dead.write_bytes(b"global_step3_universal")
    live, stream = create_new(str(save / "latest_universal"))  # held (and locked) as a running run holds it
    try:
        plan = hand_plan(save / "global_step3")
        write_universal(plan)
        assert not dead.exists()
        assert os.path.exists(live)
        assert (save / "latest_universal").read_text() == "global_step3_universal"
    finally:
        stream.close()
        discard_temp(live)
    assert _hidden(save) == []


def test_a_finalize_whose_rename_fails_can_run_again(save: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finalize takes the staging folder's lock and plan out just before its rename: where the
    rename fails (a permission, an output made meanwhile), they are put back, so that the same
    finalize runs again rather than finding "no job array's files"."""
    import ckptkeys._universal._write as write

    plan = hand_plan(save / "global_step3")
    write_universal(plan, shard=(1, 2))
    write_universal(plan, shard=(2, 2))
    real_move = write._move

    def failing(source: str, target: str) -> None:
        if source == staging_folder(plan):
            raise OutputFolderError(target, "cannot be renamed into place: Permission denied")
        real_move(source, target)

    monkeypatch.setattr(write, "_move", failing)
    with pytest.raises(OutputFolderError, match="Permission denied"):
        write_universal(plan, finalize=True)
    assert (pathlib.Path(staging_folder(plan)) / PLAN_FILE).read_text() == plan_identity(plan)
    monkeypatch.undo()
    write_universal(plan, finalize=True)
    assert sorted(_tree(pathlib.Path(plan.output))) == _names(plan)
    assert _hidden(save) == []
