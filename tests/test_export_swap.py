"""The all-or-nothing write step by step, job arrays' plan identity and index check, signals and
messages of every command (docs/export.md, "Interrupted exports")."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._export import _write
from ckptkeys._export._write import INDEX_FILE, OutputFolderError, write_export

from .test_kill import _build, _load, _outcome

FIXTURES = pathlib.Path(__file__).parent / "data" / "fixtures"
SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    root = tmp_path_factory.mktemp("swap")
    return _build(root / "a" / "global_step1", 1), _build(root / "b" / "global_step1", 2)


def _watched(monkeypatch: pytest.MonkeyPatch, out: pathlib.Path, old: Any, new: Any) -> list[str]:
    """Record every rename and removal of the write, and what a loader finds after each one."""
    seen: list[str] = []
    publish, remove = _write._publish, _write._remove

    def watched_publish(temp: str, target: str) -> None:
        publish(temp, target)
        seen.append(f"rename {os.path.basename(target)} -> {_outcome(out, old, new)}")

    def watched_remove(path: str) -> None:
        remove(path)
        seen.append(f"remove {os.path.basename(path)} -> {_outcome(out, old, new)}")

    monkeypatch.setattr(_write, "_publish", watched_publish)
    monkeypatch.setattr(_write, "_remove", watched_remove)
    return seen


@pytest.mark.parametrize(("old_size", "new_size"), [("3MB", "2MB"), ("1GB", "2MB"), ("2MB", "1GB"), ("1GB", "1GB")])
def test_every_step_of_an_overwrite_shows_the_old_the_new_or_nothing(
    old_size: str, new_size: str, tags: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    a, b = tags
    out = tmp_path / "out"
    ckptkeys.export(a, out, max_shard_size=old_size, fsync=False)
    old, new = _load(out), _load(_export_to(b, tmp_path / "ref", new_size))
    seen = _watched(monkeypatch, out, old, new)
    write_export(ckptkeys.plan_export(b, max_shard_size=new_size), out, overwrite=True, fsync=False)
    states = [line.rsplit(" -> ", 1)[1] for line in seen]
    # The old export until a step ends it, then nothing loadable, then the new export to the end.
    ranks = [{"old": 0, "nothing": 1, "new": 2}[state] for state in states]
    assert ranks == sorted(ranks) and states[-1] == "new", seen
    first_new = states.index("new")
    entry = "model.safetensors" if new_size == "1GB" else INDEX_FILE
    assert seen[first_new] == f"rename {entry} -> new", seen
    if old_size == new_size == "1GB":  # one file replacing one file: one atomic rename, nothing else
        assert seen == ["rename model.safetensors -> new"]
    else:
        assert seen[0].startswith("remove ") and seen[0].endswith("-> nothing"), seen  # the old entry point first
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "ref"))  # old leftovers removed


def _export_to(tag: pathlib.Path, out: pathlib.Path, size: str) -> pathlib.Path:
    ckptkeys.export(tag, out, max_shard_size=size, fsync=False)
    return out


def test_a_failure_before_the_renames_leaves_the_old_export_and_no_temporary_file(
    tags: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tags
    out = _export_to(a, tmp_path / "out", "3MB")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    plan = ckptkeys.plan_export(b, max_shard_size="2MB")
    calls = []
    from ckptkeys._export._safetensors import write_temp as real


    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) == len(plan.shards):  # the last shard: every other one is written, none renamed
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(_write, "write_temp", failing)
    with pytest.raises(ckptkeys.ExportError, match="cannot be written: No space left on device"):
        write_export(plan, out, overwrite=True, fsync=False)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_side_files_are_written_with_the_export_and_by_the_index_job(
    tags: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    _, b = tags
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "test"}')
    plan = dataclasses.replace(ckptkeys.plan_export(b, max_shard_size="2MB"), side_files=(str(config),))
    out = tmp_path / "whole"
    written = write_export(plan, out, fsync=False)
    assert (out / "config.json").read_text() == '{"model_type": "test"}'
    assert written[-1] == str(out / INDEX_FILE) and str(out / "config.json") in written  # before the index
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "config.json").write_text("{}")  # not the export's: replaced only when asked
    with pytest.raises(ckptkeys.OutputExistsError, match="config.json: already exists"):
        write_export(plan, tmp_path / "user", fsync=False)
    assert (tmp_path / "user" / "config.json").read_text() == "{}"
    jobs = tmp_path / "jobs"
    for k in (1, 2):
        write_export(plan, jobs, shard=(k, 2), fsync=False)
    assert not (jobs / "config.json").exists()  # a shard job writes its shards only
    write_export(plan, jobs, index_only=True, fsync=False)
    assert (jobs / "config.json").read_text() == '{"model_type": "test"}'
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(ckptkeys.ExportError, match="fifo.json: is a FIFO"):
        write_export(dataclasses.replace(plan, side_files=(str(tmp_path / "fifo.json"),)), tmp_path / "x")
    assert os.listdir(tmp_path / "x") == []


def test_plan_identity_ignores_where_the_checkpoint_is_mounted(tmp_path: pathlib.Path) -> None:
    first = shutil.copytree(FIXTURES / "z2_bf16_ws2", tmp_path / "node1" / "ckpt")
    second = shutil.copytree(FIXTURES / "z2_bf16_ws2", tmp_path / "node2" / "mnt" / "ckpt")
    one, two = ckptkeys.plan_export(first, max_shard_size=300), ckptkeys.plan_export(second, max_shard_size=300)
    identity = one.identity()
    assert two.identity() == identity
    assert one.metadata()["ckptkeys_plan"] == identity
    assert ckptkeys.plan_export(first, max_shard_size=400).identity() != identity
    assert ckptkeys.plan_export(first, max_shard_size=300, dtype="bf16").identity() != identity
    with open(sorted({s.path for t in one.tensors for s in t.sources})[0], "ab") as stream:
        stream.write(b"\0")  # a source file of another size: another checkpoint
    assert ckptkeys.plan_export(first, max_shard_size=300).identity() != identity


def test_index_only_names_every_shard_not_as_planned(
    tags: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tags
    plan = ckptkeys.plan_export(b, max_shard_size="2MB")
    out = tmp_path / "out"
    for k in (1, 2):
        write_export(plan, out, shard=(k, 2), fsync=False)
    names = [s.filename for s in plan.shards]
    os.unlink(out / names[0])
    os.truncate(out / names[1], os.path.getsize(out / names[1]) - 1)
    # Another checkpoint of the same names and shapes (its file one byte longer: the identity knows
    # files by path and size, not by content, which it would have to read whole).
    c = shutil.copytree(a.parent, tmp_path / "c") / a.name
    with open(c / "mp_rank_00_model_states.pt", "ab") as stream:
        stream.write(b"\0")
    write_export(ckptkeys.plan_export(c, max_shard_size="2MB"), tmp_path / "other", shard=(3, 8), fsync=False)
    shutil.copy(tmp_path / "other" / names[2], out / names[2])
    with pytest.raises(ckptkeys.ExportError) as caught:
        write_export(plan, out, index_only=True, fsync=False)
    message = str(caught.value)
    assert f"3 of {len(names)} shards are not as planned" in message
    assert f"{names[0]} is missing" in message
    assert f"{names[1]} is {os.path.getsize(out / names[1])} bytes, the plan says" in message
    assert f"{names[2]} was written from another plan" in message
    assert not (out / INDEX_FILE).exists()
    argv = ["export", str(b), str(out), "--max-shard-size", "2MB", "--index-only", "-q"]
    assert main(argv) == 1
    assert f"{names[0]} is missing" in capsys.readouterr().err


def test_the_next_run_removes_a_killed_run_s_temporary_files_and_says_so(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.safetensors", "model-00002-of-00004.safetensors", "model.safetensors.index.json"):
        (out / f".tmp-{name}.{os.urandom(6).hex()}").write_bytes(b"\0" * 100)  # what SIGKILL leaves
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"removed 3 temporary file(s) an interrupted export had left in {out}" in err
    assert os.listdir(out) == ["model.safetensors"]


def test_shard_and_index_only_together_are_a_usage_error(tmp_path: pathlib.Path) -> None:
    folder = str(FIXTURES / "z2_bf16_ws2")
    assert main(["export", folder, str(tmp_path), "--max-shard-size", "300", "--shard", "1/3", "--index-only"]) == 2
    with pytest.raises(ValueError, match="^index_only goes without shard"):
        ckptkeys.export(folder, tmp_path, max_shard_size=300, shard=(1, 3), index_only=True)
    assert os.listdir(tmp_path) == []


def test_a_shard_job_with_overwrite_removes_the_old_index_before_its_files(
    tags: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tags
    out = _export_to(a, tmp_path / "out", "2MB")
    old, new = _load(out), _load(_export_to(b, tmp_path / "ref", "2MB"))
    seen = _watched(monkeypatch, out, old, new)
    write_export(ckptkeys.plan_export(b, max_shard_size="2MB"), out, shard=(1, 2), overwrite=True, fsync=False)
    assert seen[0] == f"remove {INDEX_FILE} -> nothing"
    assert all(line.endswith("-> nothing") for line in seen)


def test_messages_speak_the_command_s_terms(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(FIXTURES / "z2_bf16_ws2")
    assert main(["export", folder, str(tmp_path), "-q"]) == 0
    assert main(["export", folder, str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "already exists; --overwrite replaces it" in err and "overwrite=True" not in err
    assert main(["export", str(tmp_path / "absent"), str(tmp_path / "o"), "-q"]) == 2
    assert capsys.readouterr().err == f"ckptkeys export: {tmp_path / 'absent'}: does not exist\n"
    (tmp_path / "file").write_bytes(b"")
    assert main(["export", folder, str(tmp_path / "file"), "-q"]) == 2
    assert capsys.readouterr().err == (
        f"ckptkeys export: {tmp_path / 'file'}: is a regular file, not a folder: the export needs a folder to "
        "write into\n"
    )


def test_a_read_only_out_dir_is_named_as_such(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root: permissions do not stop it; a read-only mount would
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(out) and real(path, mode))
    with pytest.raises(OutputFolderError, match=r"ro: is read-only: no file can be created in it"):
        ckptkeys.export(FIXTURES / "z2_bf16_ws2", out)
    out.chmod(0o755)


def test_a_shard_job_s_summary_counts_its_own_files(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(FIXTURES / "z2_bf16_ws2")
    assert main(["export", folder, str(tmp_path), "--max-shard-size", "300", "--shard", "2/3", "-q"]) == 0
    mine = sorted(os.listdir(tmp_path))
    size = sum(os.path.getsize(tmp_path / name) for name in mine)
    err = capsys.readouterr().err
    assert err.startswith(
        f"wrote {len(mine)} file(s), {size} bytes (fp32 master weights), to {tmp_path}: {', '.join(mine[:4])}"
    )
    assert "(job 2 of 3:" in err


# -- signals and pipes, every command -----------------------------------------------------------

SELF_KILL = """
import os, signal, sys
from ckptkeys._cli import _main
command, signame = sys.argv[1], sys.argv[2]
real = getattr(_main, {"keys": "_keys", "lint": "run_lint", "export": "run_export"}.get(command, "_check"))
def interrupted(args):
    os.kill(os.getpid(), getattr(signal, signame))
    return real(args)
setattr(_main, {"keys": "_keys", "lint": "run_lint", "export": "run_export"}.get(command, "_check"), interrupted)
sys.exit(_main.main(sys.argv[3:]))
"""
COMMANDS = {
    "keys": ["keys"],
    "inspect": ["inspect", str(FIXTURES / "z2_bf16_ws2")],
    "validate": ["validate", str(FIXTURES / "z2_bf16_ws2")],
    "lint": ["lint", str(pathlib.Path(__file__).parent / "data" / "lint_corpus")],
    "export": ["export", str(FIXTURES / "z2_bf16_ws2"), "OUT"],
}


def _run(code: str, *args: str, ignore: int | None = None, stdout: Any = subprocess.PIPE) -> Any:
    def child() -> None:
        # Whatever this process inherited (a background shell ignores SIGINT, nohup SIGHUP): the
        # child starts with each signal at its default, or ignored where the test says so.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN if number == ignore else signal.SIG_DFL)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
        preexec_fn=child, check=False,
    )  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_ends_on_a_signal_with_one_line(command: str, signame: str, tmp_path: pathlib.Path) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in COMMANDS[command]]
    done = _run(SELF_KILL, command, signame, *argv)
    number = getattr(signal, signame)
    assert done.returncode == 128 + number, done.stderr
    assert done.stderr == f"ckptkeys {command}: interrupted ({signame})\n"
    if command == "export":
        assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP"])
def test_an_inherited_ignored_signal_stays_ignored(signame: str) -> None:
    """nohup ignores SIGHUP; a background job of a non-interactive shell ignores SIGINT."""
    number = getattr(signal, signame)
    done = _run(SELF_KILL, "keys", signame, "keys", ignore=number)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_signal_during_a_write_removes_the_temporary_files_and_says_so(tmp_path: pathlib.Path) -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys
        from ckptkeys._export import _write
        from ckptkeys._export._safetensors import write_temp as real

        count = []
        def write_temp(*args, **kwargs):
            count.append(1)
            if len(count) == 3:  # two files written and waiting for their renames, the third one begun
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        _write.write_temp = write_temp
        from ckptkeys._cli._main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = tmp_path / "out"
    done = _run(code, "export", str(FIXTURES / "z2_bf16_ws2"), str(out), "--max-shard-size", "300")
    assert done.returncode == 143
    assert done.stderr == "ckptkeys export: interrupted (SIGTERM); removed 2 temporary files\n"
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", str(FIXTURES / "z2_bf16_ws2")],
        ["keys"],
        # scripts/ builds DeepSpeed file names by hand: findings to write (lint_corpus holds no .py file,
        # and a run that finds nothing writes only its summary, "All checks passed!", to stderr)
        ["lint", str(pathlib.Path(__file__).parent.parent / "scripts")],
        ["export", str(FIXTURES / "z2_bf16_ws2"), "unused", "--dry-run"],
    ],
)
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """``ckptkeys inspect X | head -1``, with the reader gone before the first write."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = _run("import sys; from ckptkeys._cli._main import main; sys.exit(main(sys.argv[1:]))", *argv,
                    stdout=write)  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert done.returncode == 0


def test_a_signal_right_after_the_temporary_file_is_created_leaves_no_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python runs a signal handler right after a call returns: between ``os.open`` creating the
    file and the assignment of its descriptor. The file is still removed."""
    from ckptkeys._read import _files

    real = os.open

    def opened_then_interrupted(path: str, flags: int, mode: int = 0o777) -> int:
        real(path, flags, mode)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "open", opened_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        _files.create_new(str(tmp_path / "model.safetensors"))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_lint_fix_interrupted_leaves_the_source_whole(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed text goes to a new file renamed over the source: an interruption before the
    rename leaves the source as it was (an in-place rewrite would have truncated it)."""
    source = tmp_path / "train.py"
    text = "x = s['param_shapes']\n"
    source.write_text(text)
    source.chmod(0o640)
    real = os.replace

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["lint", "--fix", str(source)])
    assert source.read_text() == text and os.listdir(tmp_path) == ["train.py"]
    monkeypatch.setattr(os, "replace", real)
    main(["lint", "--fix", str(source)])
    assert source.read_text() != text and os.listdir(tmp_path) == ["train.py"]
    assert source.stat().st_mode & 0o777 == 0o640
