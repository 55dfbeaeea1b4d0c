"""The file system is hostile too: FIFOs, devices, symlinks out and huge files in a folder, and
names planted in an export's output folder.

Everything that could hang (a FIFO opened for reading blocks until a writer comes) runs in a
subprocess with a timeout: a hang is a ``TimeoutExpired`` failure, not a stuck suite.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ReadError
from ckptkeys._read import _files
from ckptkeys._read._files import create_new, open_regular, read_small

from .conftest import DATA, FIXTURES, ROOT

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
TRAINER = DATA / "clients" / "hf_trainer_z2_bf16"
# A hang guard, not a timing: every command here finishes in well under a second when it works.
_HANG: float = 120


def in_subprocess(code: str) -> Any:
    """Run ``code`` (which prints one JSON document) in a fresh interpreter; its document."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONIOENCODING="utf-8")
    command = [sys.executable, "-c", textwrap.dedent(code)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=_HANG, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _copy(tmp_path: pathlib.Path, folder: str) -> pathlib.Path:
    target = tmp_path / folder
    shutil.copytree(FIXTURES / folder, target)
    return target


# -- opening one file -----------------------------------------------------------------------------


@needs_fifo
def test_read_of_a_fifo_is_a_read_error_not_a_hang(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "mp_rank_00_model_states.pt"
    os.mkfifo(fifo)
    found = in_subprocess(
        f"""
        import json, ckptkeys
        try:
            ckptkeys.read({str(fifo)!r})
        except ckptkeys.ReadError as error:
            print(json.dumps([type(error).__name__, error.path, error.reason]))
        """
    )
    assert found == ["ReadError", str(fifo), "is a FIFO, not a regular file"]


def test_read_of_a_device_or_a_folder_names_what_it_is(tmp_path: pathlib.Path) -> None:
    (tmp_path / "null.pt").symlink_to(os.devnull)
    with pytest.raises(ReadError, match=r"null\.pt: is a character device, not a regular file"):
        ckptkeys.read(tmp_path / "null.pt")
    with pytest.raises(ReadError, match="is a directory, not a regular file"):
        ckptkeys.read(tmp_path)


def test_open_regular_refuses_a_symlink_out_of_the_boundary(tmp_path: pathlib.Path) -> None:
    inside, outside = tmp_path / "run", tmp_path / "secret"
    inside.mkdir()
    outside.write_text("42")
    (inside / "out").symlink_to(outside)
    (inside / "real").write_text("7")
    (inside / "in").symlink_to(inside / "real")
    boundary = os.path.realpath(inside)
    with pytest.raises(ReadError, match=r"out: leads outside the folder .* \(to .*secret\): not followed"):
        open_regular(str(inside / "out"), boundary=boundary)
    assert read_small(str(inside / "in"), boundary=boundary, max_bytes=10) == b"7"  # a symlink inside: followed
    assert read_small(str(inside / "out"), boundary=None, max_bytes=10) == b"42"  # no boundary: the caller's path


def test_scan_refuses_a_file_swapped_for_a_symlink_out_after_listing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag's file replaced by a symlink out of the folder between listing and reading is not read."""
    from ckptkeys._check import _folders, _layout

    tag = next(p for p in _copy(tmp_path, "z1_bf16_ws1").iterdir() if p.is_dir())
    secret = tmp_path / "secret.pt"
    victim = next(p for p in sorted(tag.iterdir()) if p.name.endswith("_model_states.pt"))
    shutil.copy(victim, secret)
    listed = _folders.list_entries

    def list_then_swap(*args: Any, **kwargs: Any) -> Any:
        entries = listed(*args, **kwargs)
        if victim.is_file() and not victim.is_symlink():
            victim.unlink()
            victim.symlink_to(secret)
        return entries

    monkeypatch.setattr(_layout, "list_entries", list_then_swap)
    layout = ckptkeys.scan(tag, read=True)
    problems = [p for p in (*layout.problems, *layout.tags[0].problems) if p.file == str(victim)]
    assert any("leads outside the folder" in p.message for p in problems), problems
    assert not layout.tags[0].checkpoints.get(victim.name)


def test_read_small_refuses_a_file_above_its_cap_without_reading_it(tmp_path: pathlib.Path) -> None:
    huge = tmp_path / "trainer_state.json"
    with open(huge, "wb") as stream:
        stream.truncate(1 << 40)  # sparse: a terabyte that takes no disk
    with pytest.raises(ReadError, match=rf"trainer_state\.json: is larger than 4096 bytes \({1 << 40} bytes\)"):
        read_small(str(huge), boundary=None, max_bytes=4096)
    huge.write_bytes(b"x" * 4096)
    assert len(read_small(str(huge), boundary=None, max_bytes=4096)) == 4096


def test_a_device_node_inside_the_folder_is_refused(tmp_path: pathlib.Path) -> None:
    node = tmp_path / "latest"
    try:
        os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    except (PermissionError, AttributeError, OSError) as error:
        pytest.skip(f"cannot make a device node here: {error}")
    with pytest.raises(ReadError, match="is a character device, not a regular file"):
        read_small(str(node), boundary=os.path.realpath(tmp_path), max_bytes=4096)


# -- a folder: scan, validate, inspect --------------------------------------------------------------


@needs_fifo
def test_fifos_in_a_save_folder_are_skipped_and_named(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "latest").unlink()
    os.mkfifo(root / "latest")
    os.mkfifo(root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt")
    found = in_subprocess(
        f"""
        import json, os, ckptkeys
        problems = ckptkeys.validate({str(root)!r})
        print(json.dumps(sorted((p.code, os.path.basename(p.file), p.message) for p in problems)))
        """
    )
    # A FIFO latest is there and names no tag: an error, as export finds it (it was a skipped special file).
    assert ["latest-unreadable", "latest", "is a FIFO, not a regular file"] in found
    assert [
        "special-file",
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "skipped: is a FIFO, not a regular file",
    ] in found


@needs_fifo
def test_inspect_of_a_folder_with_fifos_returns(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    os.mkfifo(root / "global_step3" / "zero_pp_rank_5_mp_rank_00_optim_states.pt")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONIOENCODING="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "inspect", "--json", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=_HANG,
        check=False,
    )
    codes = {p["code"] for tag in json.loads(result.stdout)["tags"] for p in tag["problems"]}
    codes |= {p["code"] for p in json.loads(result.stdout)["problems"]}
    assert "special-file" in codes


def test_a_pointer_file_is_read_only_if_regular_and_small(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    with open(root / "latest", "wb") as stream:
        stream.truncate(1 << 30)
    problems = [(p.code, p.message) for p in ckptkeys.scan(root).all_problems]
    assert problems == [("latest-unreadable", "is larger than 4096 bytes (1073741824 bytes)")]


def _run_without_step_names(tmp_path: pathlib.Path) -> pathlib.Path:
    """A Trainer run whose saves are renamed, so that the step comes from trainer_state.json."""
    run = tmp_path / "run"
    shutil.copytree(TRAINER, run)
    (run / "checkpoint-2").rename(run / "early")
    (run / "checkpoint-4").rename(run / "late")
    return run


def test_trainer_state_gives_the_step_of_a_save_without_one_in_its_name(tmp_path: pathlib.Path) -> None:
    run = ckptkeys.scan_run(_run_without_step_names(tmp_path))
    assert [(s.name, s.step) for s in run.saves] == [("late", 4), ("early", 2)]
    assert run.problems == ()


@pytest.mark.parametrize("plant", ["symlink-out", "dev-zero", "fifo", "huge"])
def test_a_hostile_trainer_state_is_a_problem_not_a_step_nor_a_hang(plant: str, tmp_path: pathlib.Path) -> None:
    if plant == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    run = _run_without_step_names(tmp_path)
    state = run / "late" / "trainer_state.json"
    state.unlink()
    secret = tmp_path / "secret.json"
    secret.write_text('{"global_step": 999}')
    if plant == "symlink-out":
        state.symlink_to(secret)
    elif plant == "dev-zero":
        state.symlink_to("/dev/zero")
    elif plant == "fifo":
        os.mkfifo(state)
    else:
        with open(state, "wb") as stream:
            stream.truncate(17 << 20)  # just above the cap, sparse
    found = in_subprocess(
        f"""
        import json, ckptkeys
        run = ckptkeys.scan_run({str(run)!r})
        print(json.dumps([[[s.name, s.step] for s in run.saves], [[p.code, p.file, p.message] for p in run.problems]]))
        """
    )
    saves, problems = found
    assert ["late", None] in saves and ["early", 2] in saves  # never 999: the secret is not read
    reasons = {
        "symlink-out": "leads outside the folder",
        "dev-zero": "leads outside the folder",
        "fifo": "is a FIFO, not a regular file",
        "huge": f"is larger than {16 << 20} bytes",
    }
    assert [(code, file) for code, file, _ in problems] == [("unreadable-side-file", str(state))]
    assert reasons[plant] in problems[0][2] and problems[0][2].endswith("the save's step is unknown")


@needs_fifo
def test_validate_run_reports_the_run_s_problems(tmp_path: pathlib.Path) -> None:
    run = _run_without_step_names(tmp_path)
    state = run / "late" / "trainer_state.json"
    state.unlink()
    os.mkfifo(state)
    found = in_subprocess(
        f"""
        import json, ckptkeys
        report = ckptkeys.validate_run({str(run)!r})
        print(json.dumps([p.code for p in report.all_problems]))
        """
    )
    assert "unreadable-side-file" in found
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONIOENCODING="utf-8")
    for form in ((), ("--json",)):
        command = [sys.executable, "-m", "ckptkeys", "validate", *form, str(run)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=_HANG, check=False)
        if form:
            document = json.loads(result.stdout)
            assert [p["code"] for p in document["problems"]] == ["unreadable-side-file"]
            assert document["summary"]["warning"] >= 1
        else:
            assert f"unreadable-side-file: {state}: is a FIFO, not a regular file" in result.stdout


# -- export: no planted name redirects a write ------------------------------------------------------


def test_create_new_never_opens_an_existing_name(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"])
    monkeypatch.setattr(_files, "_random_suffix", lambda: next(names))
    (tmp_path / ".tmp-model.safetensors.aaaaaaaaaaaa").symlink_to(victim)  # a symlink planted under the name
    (tmp_path / ".tmp-model.safetensors.bbbbbbbbbbbb").symlink_to(tmp_path / "absent")  # dangling, still refused
    temp, stream = create_new(str(tmp_path / "model.safetensors"))
    with stream:
        stream.write(b"new")
    assert temp == str(tmp_path / ".tmp-model.safetensors.cccccccccccc")
    assert victim.read_bytes() == b"precious"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.lstat(temp).st_mode) == 0o666 & ~umask  # what open(path, "wb") gives


def test_create_new_gives_up_when_every_name_is_taken(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "_random_suffix", lambda: "taken")
    (tmp_path / ".tmp-x.taken").write_bytes(b"")
    with pytest.raises(FileExistsError, match="no free temporary name"):
        create_new(str(tmp_path / "x"))


@pytest.mark.parametrize("sharded", [False, True])
def test_export_replaces_a_planted_symlink_and_never_writes_through_it(sharded: bool, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    size = 400 if sharded else "5GB"
    shards = [s.filename for s in ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2", max_shard_size=size).shards]
    names = [shards[0], "model.safetensors.index.json"] if sharded else ["model.safetensors"]
    for name in names:
        (out / name).symlink_to(victim)
    with pytest.raises(ckptkeys.ExportError, match="already exists"):
        ckptkeys.export(FIXTURES / "z2_bf16_ws2", out, max_shard_size=size)
    ckptkeys.export(FIXTURES / "z2_bf16_ws2", out, overwrite=True, max_shard_size=size)
    assert victim.read_bytes() == b"precious"
    for name in names:
        assert stat.S_ISREG(os.lstat(out / name).st_mode), name  # the link itself was replaced
    assert sorted(os.listdir(out)) == sorted(shards + (["model.safetensors.index.json"] if sharded else []))


# -- bounded by what exists: no loop runs to a number written in a file ------------------------------


def _codes_in_subprocess(root: pathlib.Path, doctor: dict[str, Any] | None = None, export: bool = False) -> Any:
    """``validate(root)`` (or ``plan_export``) in a fresh interpreter, every dict of every file read
    with the keys of ``doctor`` set to its values: a doctored copy of the fixture, in memory."""
    return in_subprocess(
        f"""
        import json, os, ckptkeys
        import ckptkeys._check._layout as layout
        import ckptkeys._export._plan as plan

        DOCTOR = json.loads({json.dumps(json.dumps(doctor or {}))})
        real, real_inside = plan.read, layout.read_inside

        def walk(value):
            if isinstance(value, dict):
                for key in list(value):
                    if key in DOCTOR:
                        value[key] = DOCTOR[key]
                    else:
                        walk(value[key])
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        def doctored(path, *, limits=None):
            checkpoint = real(path, limits=limits)
            walk(checkpoint.data)
            return checkpoint

        def doctored_inside(path, boundary, *, limits=None):
            checkpoint = real_inside(path, boundary, limits=limits)
            walk(checkpoint.data)
            return checkpoint

        plan.read, layout.read_inside = doctored, doctored_inside
        if {export!r}:
            try:
                ckptkeys.plan_export({str(root)!r})
            except ckptkeys.ExportError as error:
                print(json.dumps(str(error)))
        else:
            problems = ckptkeys.validate({str(root)!r})
            print(json.dumps([[p.code, os.path.basename(p.file), p.key_path, p.message] for p in problems]))
        """
    )


def _beyond(found: list[list[Any]]) -> list[tuple[str, str | None]]:
    return [(file, key) for code, file, key, _ in found if code == "count-beyond-files"]


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        ("z2_bf16_ws2", "bf16_zero_pp_rank_999999999_mp_rank_00_optim_states.pt"),
        ("z2_bf16_ws2", "mp_rank_999999999_model_states.pt"),
        ("z3_bf16_ws2", "zero_pp_rank_999999999_mp_rank_00_model_states.pt"),
        ("moe_z2_fp32_ep2", "layer_0_expert_999999999_mp_rank_00_model_states.pt"),
        ("moe_z2_fp32_ep2", "expp_rank_999999999_mp_rank_00_optim_states.pt"),
    ],
)
def test_a_rank_in_a_file_name_far_beyond_the_files_is_one_problem(
    fixture: str, name: str, tmp_path: pathlib.Path
) -> None:
    root = _copy(tmp_path, fixture)
    (root / "global_step3" / name).touch()  # one empty file
    found = _codes_in_subprocess(root)
    assert _beyond(found) == [(name, None)]
    message = next(m for code, _, _, m in found if code == "count-beyond-files")
    assert "1000000000 files" in message or "999999999" in message
    assert not [m for code, _, _, m in found if code.startswith("missing-")]


def test_a_few_missing_ranks_are_still_listed(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    (root / "global_step3" / "bf16_zero_pp_rank_5_mp_rank_00_optim_states.pt").touch()
    missing = [p.file for p in ckptkeys.scan(root).all_problems if p.code == "missing-rank"]
    assert [os.path.basename(f or "") for f in missing] == [
        f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (2, 3, 4)
    ]


@pytest.mark.parametrize(
    ("fixture", "doctor", "file", "key"),
    [
        (
            "z2_bf16_ws2",
            {"mp_world_size": 10**9, "checkpoint_parallel_dimensions": None},
            "mp_rank_00_model_states.pt",
            "mp_world_size",
        ),
        (
            "z2_bf16_ws2",
            {"dp_world_size": 10**9, "partition_count": [10**9]},
            "mp_rank_00_model_states.pt",
            "dp_world_size",
        ),
        ("moe_z2_fp32_ep2", {"num_experts": [10**9]}, "mp_rank_00_model_states.pt", "num_experts"),
    ],
)
def test_a_count_in_a_pickle_far_beyond_the_files_is_one_problem(
    fixture: str, doctor: dict[str, Any], file: str, key: str, tmp_path: pathlib.Path
) -> None:
    found = _codes_in_subprocess(FIXTURES / fixture, doctor)
    assert _beyond(found) == [(file, key)]
    assert not [m for code, _, _, m in found if code.startswith("missing-")]


def test_an_ep_size_far_beyond_the_files_is_one_problem() -> None:
    found = _codes_in_subprocess(DATA / "moe_z0_fp32_ep2", {"name": "ep_size_1000000000"})
    assert _beyond(found) == [("global_step3", None)]
    assert "ep_size_1000000000" in next(m for code, _, _, m in found if code == "count-beyond-files")


def test_export_of_a_partition_count_far_beyond_the_files_is_refused_naming_it() -> None:
    # Export refuses what validate reports, before any planner loops over the ranks the count claims.
    found = _codes_in_subprocess(FIXTURES / "z2_bf16_ws2", {"partition_count": [10**9]}, export=True)
    assert "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt: partition-count-mismatch " in found
    assert "partition_count says 1000000000 data-parallel ranks, the folder has shards of 2" in found
    assert found.endswith("(not exported: the checkpoint's files disagree with each other; 1 more problem(s): "
                          "ckptkeys validate lists them)")  # fmt: skip


@needs_fifo
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_export_of_a_source_swapped_for_a_fifo_after_planning_fails_naming_it(
    dtype: str, tmp_path: pathlib.Path
) -> None:
    if dtype != "fp32":
        pytest.importorskip("numpy")
    root = _copy(tmp_path, "z2_bf16_ws2")
    shard = root / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    found = in_subprocess(
        f"""
        import json, os, ckptkeys
        plan = ckptkeys.plan_export({str(root)!r}, dtype={dtype!r})
        os.unlink({str(shard)!r})
        os.mkfifo({str(shard)!r})
        try:
            ckptkeys.write_export(plan, {str(tmp_path / "out")!r})
        except ckptkeys.ExportError as error:
            print(json.dumps([error.path, str(error), sorted(os.listdir({str(tmp_path / "out")!r}))]))
        """
    )
    assert found[0] == str(shard)
    assert found[1].endswith("is a FIFO, not a regular file")
    assert found[2] == []  # no temporary file left behind


def test_export_onto_a_folder_named_like_its_output_names_the_output(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    (out / "model.safetensors").mkdir(parents=True)
    with pytest.raises(ckptkeys.ExportError, match=r"out[\\/]model\.safetensors: cannot be written: "):
        ckptkeys.export(FIXTURES / "z2_bf16_ws2", out, overwrite=True)
    assert os.listdir(out) == ["model.safetensors"]  # no temporary file left


class _Signal(BaseException):
    """Stands for the exception a signal handler raises (``_signals.Interrupted``)."""


def _open_then_signal(fd: int, mode: str, **kwargs: Any) -> Any:
    """``open(fd)`` returning, and a signal's handler raising right after, before the result is
    stored: the file object is dropped on the way out, which closes ``fd``."""
    import builtins

    stream = builtins.open(fd, mode, **kwargs)
    del stream  # the object a real interruption leaves on the stack, freed as the exception unwinds
    raise _Signal


def test_a_signal_right_after_create_new_opens_leaves_no_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill test's rare leftover: the signal's exception, not EBADF of a second close, and no temporary file."""
    monkeypatch.setattr(_files, "open", _open_then_signal, raising=False)
    with pytest.raises(_Signal):
        create_new(str(tmp_path / "model.safetensors"))
    assert os.listdir(tmp_path) == []
    assert not [t for t in _files._Temps.live if t.startswith(str(tmp_path))]


def test_a_signal_right_after_open_regular_opens_is_that_signal(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.pt"
    path.write_bytes(b"x")
    monkeypatch.setattr(_files, "open", _open_then_signal, raising=False)
    with pytest.raises(_Signal):
        open_regular(str(path))
