"""The command line where users and shells push it: closed or full standard streams, Ctrl-C at
any moment, config paths that are devices or FIFOs, empty and repeated selector options, a
missing PATH, JSON errors of every command, a ``latest`` that is a folder, ``--save NAME/``,
more ``--shard`` jobs than files, ``--quiet`` with ``--json`` (issue 21's red team)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli import _config, _main
from ckptkeys._cli._main import main
from ckptkeys._cli._status import EXIT_OK, EXIT_OUTPUT, EXIT_PROBLEMS, EXIT_USAGE

from .conftest import DATA, FIXTURES

SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors and signals")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("robust")
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root / "ck")
    shutil.copytree(DATA / "clients" / "hf_trainer_z2_bf16", root / "run")
    (root / "bad.py").write_text("x = state['param_shapes']\ny = state['ds_version']\n")
    (root / "empty").mkdir()
    return root


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))


def _child(argv: list[str], cwd: pathlib.Path, *, close: tuple[int, ...] = (), stdout: Any = subprocess.PIPE,
           code: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m ckptkeys ARGV`` (or ``python -c CODE ARGV``), the descriptors ``close`` closed as ``>&-`` does."""

    def closing() -> None:
        # A child of a background shell inherits SIGINT ignored, one under nohup SIGHUP (as CI runs):
        # the signal tests need the default dispositions a terminal gives.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        for fd in close:
            os.close(fd)

    command = [sys.executable, "-c", code, *argv] if code is not None else [sys.executable, "-m", "ckptkeys", *argv]
    return subprocess.run(
        command, cwd=cwd, env=_env(), stdout=stdout, stderr=subprocess.PIPE, text=True, check=False,
        preexec_fn=closing,
    )  # fmt: skip


# --- standard output and standard error that cannot be written ----------------------------------

WRITERS = [
    ["--version"],
    ["--help"],
    ["inspect", "--help"],
    ["keys"],
    ["inspect", "ck"],
    ["export", "ck", "out", "--dry-run"],
    ["lint", "bad.py"],
    ["inspect", "nope", "--json"],
]


@POSIX
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", WRITERS, ids=" ".join)
def test_a_full_standard_output_is_74_with_one_line(argv: list[str], world: pathlib.Path) -> None:
    """``--help`` printed nothing and exited 0; ``--version`` gave a traceback and 1."""
    with open("/dev/full", "w") as full:
        done = _child(argv, world, stdout=full)
    assert done.returncode == EXIT_OUTPUT, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.endswith(": cannot write to standard output: No space left on device"), done.stderr
    assert "Traceback" not in done.stderr


@POSIX
@pytest.mark.parametrize("argv", WRITERS, ids=" ".join)
def test_a_closed_standard_output_is_74_with_one_line(argv: list[str], world: pathlib.Path) -> None:
    """``>&-``: Python's ``sys.stdout`` is None; it was "'NoneType' object has no attribute 'write'"."""
    done = _child(argv, world, close=(1,), stdout=None)
    assert done.returncode == EXIT_OUTPUT, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(": cannot write to standard output: it is closed")


@POSIX
def test_a_command_that_prints_nothing_runs_with_standard_output_closed(world: pathlib.Path) -> None:
    done = _child(["validate", "ck", "-q"], world, close=(1,), stdout=None)
    assert (done.returncode, done.stderr) == (EXIT_OK, "")


@POSIX
def test_a_closed_standard_error_keeps_the_status(world: pathlib.Path) -> None:
    """``inspect nope 2>&-`` exited 1 (the error line failed) instead of 2."""
    done = _child(["inspect", "nope"], world, close=(2,))
    assert (done.returncode, done.stdout) == (EXIT_USAGE, "")
    both = _child(["inspect", "ck"], world, close=(1, 2), stdout=None)
    assert both.returncode == EXIT_OUTPUT


# --- signals at any moment ----------------------------------------------------------------------

# The child: a finder that sends the process SIGNAL when MODULE is first imported, then ckptkeys
# run as `python -m ckptkeys` runs it. Imports are where the first ~70 ms go (argparse, the
# registry, the reader), and where a Ctrl-C gave a KeyboardInterrupt traceback.
AT_IMPORT = """
import importlib.abc, os, runpy, signal, sys
module, name = sys.argv[1], sys.argv[2]
class Send(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), getattr(signal, name))
        return None
sys.meta_path.insert(0, Send())
sys.argv = ["ckptkeys", *sys.argv[3:]]
runpy.run_module("ckptkeys", run_name="__main__", alter_sys=True)
"""
# Modules the command imports, in the order it does; the first before its handlers are set.
BEFORE_HANDLERS = ["ckptkeys._cli._signals"]
AFTER_HANDLERS = ["ckptkeys._cli._main", "argparse", "ckptkeys._keys._registry", "ckptkeys._read._files",
                  "ckptkeys._cli._config", "ckptkeys._cli._report", "ckptkeys._check._layout"]  # fmt: skip
STATUS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


@POSIX
@pytest.mark.parametrize(
    ("module", "name"),
    [(m, "SIGINT") for m in BEFORE_HANDLERS] + [(m, n) for m in AFTER_HANDLERS for n in STATUS],
)
def test_a_signal_while_the_command_loads_is_one_line(module: str, name: str, world: pathlib.Path) -> None:
    done = _child([module, name, "inspect", "ck", "--all"], world, code=AT_IMPORT)
    assert (done.returncode, done.stderr) == (STATUS[name], f"ckptkeys inspect: interrupted ({name})\n")


@POSIX
@pytest.mark.parametrize("name", list(STATUS))
def test_a_signal_while_the_arguments_are_parsed_is_one_line(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = _main._parser

    def interrupted_parser() -> Any:
        os.kill(os.getpid(), getattr(signal, name))
        return real()

    monkeypatch.setattr(_main, "_parser", interrupted_parser)
    # The default disposition a terminal gives (under nohup SIGHUP is inherited ignored, and the
    # command keeps an ignored signal ignored), put back as it was after the test.
    number = getattr(signal, name)
    inherited = signal.signal(number, signal.SIG_DFL)
    try:
        before = signal.getsignal(signal.SIGINT)
        assert main(["validate", "nope"]) == STATUS[name]
        assert capsys.readouterr().err == f"ckptkeys validate: interrupted ({name})\n"
        assert signal.getsignal(signal.SIGINT) is before  # the test process's handlers are back
    finally:
        signal.signal(number, inherited)


def test_the_console_script_and_python_m_enter_where_the_handlers_are_set_first() -> None:
    """The signal tests above run ``python -m ckptkeys``; the console script must enter the same way."""
    import ckptkeys._cli

    pyproject = (pathlib.Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '\nckptkeys = "ckptkeys._cli:main"' in pyproject
    assert "from ._cli import main" in (pathlib.Path(ckptkeys.__file__).parent / "__main__.py").read_text()
    assert ckptkeys._cli.main.__module__ == "ckptkeys._cli"


# --- --config that is not a regular file --------------------------------------------------------


@POSIX
@pytest.mark.parametrize("kind", ["device", "fifo", "large"])
def test_a_config_that_is_no_small_regular_file_is_a_usage_error(
    kind: str, world: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config /dev/zero`` read without end; ``--config FIFO`` waited for a writer for ever."""
    if kind == "device":
        path = "/dev/zero"  # read to its end, it never ends
        says = "is a character device, not a regular file"
    elif kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
        says = "is a FIFO, not a regular file"
    else:
        path = str(tmp_path / "pyproject.toml")
        with open(path, "wb") as stream:
            stream.truncate(_config.MAX_CONFIG_BYTES + 1)  # sparse: no disk needed
        says = f"is larger than {_config.MAX_CONFIG_BYTES} bytes"
    assert main(["validate", str(world / "ck"), "--config", path]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"ckptkeys validate: {path}: {says}") and err.count("\n") == 1, err


# --- empty and repeated selector options --------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "ck", "--select", ""],
        ["validate", "ck", "--select", ","],
        ["inspect", "ck", "--select", " , "],
        ["validate", "ck", "--ignore", ""],
        ["validate", "ck", "--require", ""],
        ["validate", "ck", "--select", "missing", "--select", ""],
        ["lint", "bad.py", "--select", ""],
        ["lint", "bad.py", "--ignore", ","],
    ],
    ids=" ".join,
)
def test_an_option_that_lists_no_code_is_a_usage_error(
    argv: list[str], world: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--select ''`` selected nothing, so every problem was hidden and the status was 0."""
    monkeypatch.chdir(world)
    assert main([*argv, *(["--isolated"] if argv[0] != "lint" else [])]) == EXIT_USAGE
    err = capsys.readouterr().err
    option = argv[-2]
    said = f"{option} {argv[-1]!r}: lists no code; give at least one, or leave {option} out"
    assert err == f"ckptkeys {argv[0]}: {said}\n"


def test_select_of_nothing_in_the_config_is_a_usage_error(
    world: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text("[tool.ckptkeys.validate]\nselect = []\n")
    assert main(["validate", str(world / "ck"), "--config", str(config)]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"ckptkeys validate: {config}: [tool.ckptkeys.validate] select: [] selects no problem; list codes, or leave "
        "the key out for all\n"
    )


def test_repeated_selector_options_add_up(world: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As ruff's list options do; the last one used to win silently."""
    argv = ["validate", str(world / "ck"), "--json", "--isolated"]
    main([*argv, "--select", "missing", "--select", "security,converters", "--ignore", "client-state-key",
          "--ignore", "latest"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    selection = document["selection"]
    assert selection["select"] == ["missing", "security", "converters"]
    assert selection["ignore"] == ["client-state-key", "latest"]
    main([*argv, "--require", "zero_to_fp32", "--require", "ds_to_universal"])
    assert json.loads(capsys.readouterr().out)["selection"]["require"] == ["zero_to_fp32", "ds_to_universal"]
    codes = {}
    for select in (["CK1"], ["CK3"], ["CK1", "CK3"]):
        main(["lint", str(world / "bad.py"), "--json", *(a for s in select for a in ("--select", s))])
        codes[tuple(select)] = {f["code"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert codes[("CK1", "CK3")] == codes[("CK1",)] | codes[("CK3",)]


# --- validate's PATH -----------------------------------------------------------------------------


def test_validate_requires_path_and_says_it_as_argparse_does(capsys: pytest.CaptureFixture[str]) -> None:
    """It said "PATH is required (or --example)", an option validate does not have."""
    assert main(["validate"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--example" not in err and "PATH" in err and err.count("\n") == 1
    usage = {name: _commands()[name].format_usage() for name in ("validate", "inspect")}
    assert " [PATH]" not in usage["validate"] and " PATH" in usage["validate"]
    assert " [PATH]" in usage["inspect"] and "--example" in usage["inspect"]


def _commands() -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers."""
    for action in _main._parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


# --- JSON errors: one document for every command ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error", "status"),
    [
        (["inspect", "nope"], "ReadError", EXIT_USAGE),
        (["validate", "nope"], "ReadError", EXIT_USAGE),
        (["export", "nope", "out", "--dry-run"], "ReadError", EXIT_USAGE),
        (["lint", "nope"], "ReadError", EXIT_USAGE),
        (["inspect", "empty"], "NotACheckpointError", EXIT_USAGE),
        (["validate", "empty"], "NotACheckpointError", EXIT_USAGE),
        (["export", "empty", "out", "--dry-run"], "NotACheckpointError", EXIT_USAGE),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_every_commands_read_error_has_its_code_and_globals(
    argv: list[str], error: str, status: int, world: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """export and lint gave a UsageError, or a NotACheckpointError without code and globals."""
    monkeypatch.chdir(world)
    assert main([*argv, "--json"]) == status
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["error"]["type"] == error
    assert document["error"]["code"] == "unreadable-file" and document["error"]["globals"] == []
    assert document["path"] == argv[1]
    assert captured.err == f"ckptkeys {argv[0]}: {document['error']['message']}\n"


# --- a latest that is a folder --------------------------------------------------------------------


def test_a_latest_that_is_a_folder_is_reported_by_validate(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate exited 0 with no word of it, while export said "has no 'latest' file"."""
    shutil.copytree(FIXTURES / "z2_bf16_ws2", tmp_path / "ck")
    (tmp_path / "ck" / "latest").unlink()
    (tmp_path / "ck" / "latest").mkdir()
    monkeypatch.chdir(tmp_path)
    latest = [p for p in ckptkeys.validate("ck") if p.file == os.path.join("ck", "latest")]
    assert [(p.severity.value, p.code, p.message) for p in latest] == [
        ("error", "latest-unreadable", "is a folder, not a file")
    ]
    assert main(["validate", "ck", "-q"]) == EXIT_PROBLEMS
    assert main(["export", "ck", "out", "--dry-run"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("ckptkeys export: ck/latest: is a folder, not a file (tags: ")


# --- --save NAME/ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "validate", "export"])
def test_a_save_named_with_a_trailing_slash_is_the_save(
    command: str, world: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--save checkpoint-2/`` (tab completion) was "no save"."""
    monkeypatch.chdir(world)
    oldest = ckptkeys.scan_run("run").saves[-1].name
    tail = ["out", "--dry-run", "--json"] if command == "export" else ["--json", "--isolated"]
    outputs = []
    for name in (oldest, oldest + "/", oldest + os.sep + os.sep):
        status = main([command, "run", *tail, "--save", name])
        outputs.append((status, capsys.readouterr().out))
    assert outputs[0][0] in (EXIT_OK, EXIT_PROBLEMS) and outputs[1:] == [outputs[0]] * 2
    assert main([command, "run", *tail, "--save", "nope/"]) == EXIT_USAGE
    assert "no save 'nope/'" in capsys.readouterr().err


# --- --shard K/N beyond the files -----------------------------------------------------------------


def test_a_shard_job_beyond_the_files_says_so_and_succeeds(
    world: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "to ex/sh:  (job 5 of 9...)" with an empty list of files."""
    size = "100B"
    files = len(ckptkeys.plan_export(world / "ck", max_shard_size=size).shards)
    assert files > 1
    jobs = files + 2
    out = str(tmp_path / "out")
    assert main(["export", str(world / "ck"), out, "--max-shard-size", size, "-q", "--shard", f"{jobs}/{jobs}"]) == 0
    assert capsys.readouterr().err == f"job {jobs} of {jobs} has no file to write (the export has {files} files)\n"
    assert not os.path.exists(out) or os.listdir(out) == []
    assert main(["export", str(world / "ck"), out, "--max-shard-size", size, "-q", "--shard", f"1/{jobs}"]) == 0
    assert capsys.readouterr().err.startswith("wrote 1 file(s), ")


# --- --quiet --------------------------------------------------------------------------------------


def test_quiet_says_what_it_does_for_each_command(world: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    choices = _commands()
    helps = {name: next(a.help for a in choices[name]._actions if "--quiet" in a.option_strings) for name in
             ("inspect", "validate")}  # fmt: skip
    assert "validate" not in str(helps["inspect"]) and "--json" in str(helps["validate"])
    assert main(["validate", str(world / "ck"), "-q", "--isolated"]) == EXIT_OK
    assert capsys.readouterr() == ("", "")
    assert main(["validate", str(world / "ck"), "-q", "--json", "--isolated"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["exit"]["status"] == EXIT_OK


# --- found by the re-check red team ---------------------------------------------------------------


def test_an_error_line_escapes_names_taken_from_folders(tmp_path: pathlib.Path) -> None:
    """A tag or save name holding a newline or ESC, quoted in a command's error, printed raw: a second
    (forged) line and a terminal escape. The line escapes them; the JSON error keeps them exact."""
    tag = "t\x1b[2J\nerrors (0):\u202e"
    save = tmp_path / "save"
    shutil.copytree(FIXTURES / "z2_bf16_ws2" / "global_step3", save / tag)
    done = _child(["export", "save", "out", "--tag", "nope"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "\x1b" not in done.stderr and "\u202e" not in done.stderr
    assert "t\\x1b[2J\\nerrors (0):\\u202e" in done.stderr
    document = json.loads(_child(["export", "save", "out", "--tag", "nope", "--dry-run", "--json"], tmp_path).stdout)
    assert tag in document["error"]["message"]


@POSIX
@pytest.mark.parametrize("kind", ["fifo", "dangling", "outside"])
def test_a_latest_that_is_no_regular_file_is_unreadable(tmp_path: pathlib.Path, kind: str) -> None:
    """A folder `latest` was an error; a FIFO, a dangling link or a link out of the folder was a
    warning "no latest file" (false: it is there) and exit 0, while export said it has none."""
    save = tmp_path / "save"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", save)
    (save / "latest").unlink()
    if kind == "fifo":
        os.mkfifo(save / "latest")
    elif kind == "dangling":
        (save / "latest").symlink_to("global_step_gone")
    else:
        (tmp_path / "elsewhere").write_text("global_step3")
        (save / "latest").symlink_to(tmp_path / "elsewhere")
    problems = ckptkeys.validate(save)
    (unreadable,) = [p for p in problems if p.code == "latest-unreadable"]
    assert unreadable.severity == "error" and unreadable.file == str(save / "latest")
    assert "no-latest" not in [p.code for p in problems]
    assert _child(["validate", "save"], tmp_path).returncode == 1
