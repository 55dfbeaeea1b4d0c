"""One convention for every command's exit status and error line (docs/cli.md "Exit status").

``TABLE`` is every failure class for every command: the status (``_cli/_status``), and the text
that follows ``ckptkeys COMMAND: `` on the one line of standard error, naming the path as it was
typed or the option as it is typed; or why the class does not apply to the command, or which
test covers it. Every case runs in the directory of its files, with relative paths, as a user
types them; with ``--json`` (every command has it) standard output is one error document.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli import _status
from ckptkeys._cli._main import main
from ckptkeys._cli._signals import Interrupted

from .conftest import FIXTURES

DATA = pathlib.Path(__file__).parent / "data"
SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
COMMANDS = ("keys", "inspect", "validate", "lint", "export", "universal", "ckptkeys")  # the last: no command, --version
CLASSES = (
    "fine",
    "problems found",
    "nothing found",
    "missing path",
    "a file where a folder is meant",
    "a folder where a file is meant",
    "a path through a file",
    "unreadable file",
    "corrupt file",
    "not a checkpoint",
    "bad option value",
    "unknown option",
    "unknown tag",
    "unknown save",
    "output path is a file",
    "output exists",
    "output folder not writable",
    "standard output not writable",
    "interrupted",
)


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    status: int
    says: str | None = None
    """What follows ``ckptkeys COMMAND: `` on the one line of standard error; None: no error line."""
    json: bool = True
    """With ``--json`` the same error as a document (export's output: ``--json`` is ``--dry-run``'s, which
    writes nothing)."""


def case(argv: str, status: int, says: str | None = None, *, json: bool = True) -> Case:
    return Case(tuple(argv.split()), status, says, json)


OK, PROBLEMS, USAGE, OUTPUT = _status.EXIT_OK, _status.EXIT_PROBLEMS, _status.EXIT_USAGE, _status.EXIT_OUTPUT
# Not a case: why the class does not apply, or the test that covers it.
NOT_FOR_KEYS = "keys reads no path"
SIGNALS = "tests/test_kill.py, tests/test_interrupted_edges.py: 129/130/143 for every command, one line"
DEV_FULL = "test_standard_output_that_cannot_be_written_is_74_for_every_command below"
ANY_PATH = "any path kind is a PATH (file or folder)"
TABLE: dict[tuple[str, str], Case | str] = {
    # keys
    ("keys", "fine"): case("keys", OK),
    ("keys", "problems found"): "keys finds no problems",
    ("keys", "nothing found"): case("keys nope", USAGE, "no group or key value 'nope'"),
    ("keys", "bad option value"): case("keys --markdown --json", USAGE, "--json: not allowed with"),
    ("keys", "unknown option"): case("keys --bogus", USAGE, "unrecognized arguments: --bogus"),
    **{("keys", c): NOT_FOR_KEYS for c in CLASSES[3:10] + CLASSES[12:17]},
    ("keys", "unknown tag"): NOT_FOR_KEYS,
    ("keys", "standard output not writable"): DEV_FULL,
    ("keys", "interrupted"): SIGNALS,
    # lint
    ("lint", "fine"): case("lint good.py", OK),
    ("lint", "problems found"): case("lint bad.py", PROBLEMS),
    ("lint", "nothing found"): case("lint empty", OK),  # no Python file: nothing to report, as ruff
    ("lint", "missing path"): case("lint good.py missing.py", USAGE, "missing.py: does not exist"),
    ("lint", "a file where a folder is meant"): "PATH is a .py file or a folder",
    ("lint", "a folder where a file is meant"): "PATH is a .py file or a folder",
    ("lint", "a path through a file"): case("lint afile/x.py", USAGE, "afile/x.py: does not exist"),
    ("lint", "unreadable file"): case("lint good.py unreadable.py", PROBLEMS),  # a CK001 finding, the others linted
    ("lint", "corrupt file"): case("lint latin.py", PROBLEMS),  # CK001: not decodable, a finding
    ("lint", "not a checkpoint"): "lint reads Python files",
    ("lint", "bad option value"): case("lint --select XX9 good.py", USAGE, "--select XX9: unknown code"),
    ("lint", "unknown option"): case("lint --bogus good.py", USAGE, "unrecognized arguments: --bogus"),
    ("lint", "unknown tag"): "lint reads Python files",
    ("lint", "unknown save"): "lint reads Python files",
    ("lint", "output path is a file"): "lint --fix rewrites the files it was given",
    ("lint", "output exists"): "lint --fix rewrites the files it was given",
    ("lint", "output folder not writable"): "lint --fix rewrites the files it was given",
    ("lint", "standard output not writable"): DEV_FULL,
    ("lint", "interrupted"): SIGNALS,
    # export
    ("export", "fine"): case("export ck out-fine -q", OK),
    ("export", "problems found"): case(
        "export broken out-broken -q", PROBLEMS, "broken/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt: "
    ),
    ("export", "nothing found"): case("export empty out-x", USAGE, "empty: holds no DeepSpeed checkpoint"),
    ("export", "missing path"): case("export missing out-x", USAGE, "missing: does not exist"),
    ("export", "a file where a folder is meant"): case(
        "export afile out-x", USAGE, "afile: is a file, not a checkpoint folder"
    ),
    ("export", "a folder where a file is meant"): "CHECKPOINT and OUT_DIR are folders",
    ("export", "a path through a file"): case("export afile/x out-x", USAGE, "afile/x: does not exist"),
    ("export", "unreadable file"): case(
        "export unreadable out-x -q", PROBLEMS, "unreadable/global_step3/mp_rank_00_model_states.pt: unreadable-file: "
        "cannot be read: Permission denied"
    ),
    ("export", "corrupt file"): case("export trunc.pt out-x", USAGE, "trunc.pt: is a file, not a checkpoint folder"),
    ("export", "not a checkpoint"): case("export afile out-x", USAGE, "afile: is a file"),
    ("export", "bad option value"): case("export ck out-x --max-shard-size x", USAGE, "--max-shard-size x: "),
    ("export", "unknown option"): case("export ck out-x --dtype bf8", USAGE, "--dtype: invalid choice: 'bf8'"),
    ("export", "unknown tag"): case("export ck out-x --tag nope", USAGE, "ck: has no tag folder 'nope'"),
    ("export", "unknown save"): case("export run out-x --save nope", USAGE, "run: no save 'nope'"),
    ("export", "output path is a file"): case(
        "export ck afile -q", USAGE, "afile: is a regular file, not a folder", json=False
    ),
    ("export", "output exists"): case(
        "export ck done -q", USAGE, "done/model.safetensors: already exists; --overwrite", json=False
    ),
    ("export", "output folder not writable"): case(
        "export ck readonly -q", OUTPUT, "readonly: is read-only", json=False
    ),
    ("export", "standard output not writable"): DEV_FULL,
    ("export", "interrupted"): SIGNALS,
    # universal: into --output-folder out-..., removed before every case; ck has no universal_checkpoint_info
    ("universal", "fine"): case("universal ck -q --inject-missing-state --output-folder out-fine", OK),
    ("universal", "problems found"): case(
        "universal broken -q --inject-missing-state --output-folder out-x", PROBLEMS,
        "broken/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt: ",
    ),  # fmt: skip
    ("universal", "nothing found"): case("universal empty", USAGE, "empty: holds no DeepSpeed checkpoint"),
    ("universal", "missing path"): case("universal missing", USAGE, "missing: does not exist"),
    ("universal", "a file where a folder is meant"): case(
        "universal afile", USAGE, "afile: is a file, not a checkpoint folder"
    ),
    ("universal", "a folder where a file is meant"): "CHECKPOINT and --output-folder are folders",
    ("universal", "a path through a file"): case("universal afile/x", USAGE, "afile/x: does not exist"),
    ("universal", "unreadable file"): case(
        "universal unreadable -q --inject-missing-state --output-folder out-x", PROBLEMS,
        "unreadable/global_step3/mp_rank_00_model_states.pt: unreadable-file: ",
    ),  # fmt: skip
    ("universal", "corrupt file"): case("universal trunc.pt", USAGE, "trunc.pt: is a file, not a checkpoint folder"),
    ("universal", "not a checkpoint"): case("universal afile", USAGE, "afile: is a file"),
    ("universal", "bad option value"): case("universal ck --shard 3/2", USAGE, "--shard '3/2': expected K/N"),
    ("universal", "unknown option"): case("universal ck --bogus", USAGE, "unrecognized arguments: --bogus"),
    ("universal", "unknown tag"): case("universal ck --tag nope", USAGE, "ck: has no tag folder 'nope'"),
    ("universal", "unknown save"): "universal has no --save: a run folder converts its newest save",
    ("universal", "output path is a file"): case(
        "universal ck -q --inject-missing-state --output-folder afile", USAGE, "afile: is not a folder", json=False
    ),
    ("universal", "output exists"): case(
        "universal ck -q --inject-missing-state --output-folder done", USAGE,
        "done: already exists; --overwrite replaces it", json=False,
    ),  # fmt: skip
    ("universal", "output folder not writable"): case(
        "universal ck -q --inject-missing-state --output-folder readonly/out", OUTPUT, "readonly: is read-only",
        json=False,
    ),  # fmt: skip
    ("universal", "standard output not writable"): DEV_FULL,
    ("universal", "interrupted"): "tests/test_universal_kill.py: 130/143 caught, one line, nothing partial",
    # no command
    ("ckptkeys", "fine"): case("--version", OK),
    ("ckptkeys", "bad option value"): case("", USAGE, None),
    ("ckptkeys", "unknown option"): case("--bogus", USAGE, None),
    **{("ckptkeys", c): "no command: --version or --help only" for c in CLASSES[1:10] + CLASSES[12:18]},
    ("ckptkeys", "interrupted"): "no command runs",
}
for _command in ("inspect", "validate"):
    _c = _command
    TABLE |= {
        (_c, "fine"): case(f"{_c} ck", OK),
        (_c, "problems found"): case(f"{_c} broken", PROBLEMS),
        (_c, "nothing found"): case(f"{_c} empty", USAGE, "empty: holds no DeepSpeed checkpoint"),
        (_c, "missing path"): case(f"{_c} missing", USAGE, "missing: does not exist"),
        (_c, "a file where a folder is meant"): ANY_PATH,
        (_c, "a folder where a file is meant"): ANY_PATH,
        (_c, "a path through a file"): case(f"{_c} afile/x", USAGE, "afile/x: does not exist"),
        (_c, "unreadable file"): case(f"{_c} unreadable.pt", USAGE, "unreadable.pt: cannot be read: Permission denied"),
        (_c, "corrupt file"): case(f"{_c} trunc.pt", USAGE, "trunc.pt: broken zip archive"),
        (_c, "not a checkpoint"): case(f"{_c} afile", USAGE, "afile: "),  # what it is not: docs/reader.md
        (_c, "bad option value"): case(f"{_c} ck --save", USAGE, "--save: expected one argument"),
        (_c, "unknown option"): case(f"{_c} ck --bogus", USAGE, "unrecognized arguments: --bogus"),
        (_c, "unknown tag"): f"{_c} reports every tag",
        (_c, "unknown save"): case(f"{_c} run --save nope", USAGE, "run: no save 'nope'"),
        (_c, "output path is a file"): f"{_c} writes only standard output",
        (_c, "output exists"): f"{_c} writes only standard output",
        (_c, "output folder not writable"): f"{_c} writes only standard output",
        (_c, "standard output not writable"): DEV_FULL,
        (_c, "interrupted"): SIGNALS,
    }
TABLE[("inspect", "bad option value")] = case("inspect ck --depth -1", USAGE, "--depth -1: must be 0 or more")
CASES = {f"{command}: {kind}": entry for (command, kind), entry in TABLE.items() if isinstance(entry, Case)}


def test_the_table_has_every_class_for_every_command() -> None:
    assert set(TABLE) == {(command, kind) for command in COMMANDS for kind in CLASSES}
    assert all(isinstance(entry, Case) or entry for entry in TABLE.values())
    assert {c.status for c in CASES.values()} == {OK, PROBLEMS, USAGE, OUTPUT}


def test_the_statuses_are_the_conventions() -> None:
    assert (OK, PROBLEMS, USAGE, OUTPUT) == (0, 1, 2, 74)
    assert set(_status.EXIT_MEANINGS) == {0, 1, 2, 74}
    statuses = {name: Interrupted(getattr(signal, name)).status for name in ("SIGHUP", "SIGINT", "SIGTERM")}
    assert statuses == {"SIGHUP": 129, "SIGINT": 130, "SIGTERM": 143}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The files of every case, named as the table types them."""
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root / "ck")
    shutil.copytree(FIXTURES / "tp2_z1_bf16", root / "tp")
    shutil.copytree(DATA / "clients" / "hf_trainer_z2_bf16", root / "run")
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root / "unreadable")
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root / "broken")
    shard = root / "broken" / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:400])  # a truncated rank: validate's error, export's refusal
    shutil.copyfile(root / "ck" / "global_step3" / "mp_rank_00_model_states.pt", root / "unreadable.pt")
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root / "emptylatest")
    (root / "emptylatest" / "latest").write_bytes(b"")
    (root / "afile").write_text("hi\n")
    (root / "trunc.pt").write_bytes((root / "unreadable.pt").read_bytes()[:300])
    (root / "empty").mkdir()
    (root / "readonly").mkdir()
    (root / "good.py").write_text("x = 1\n")
    (root / "unreadable.py").write_text("x = 1\n")
    (root / "bad.py").write_text("x = state['param_shapes']\n")
    (root / "latin.py").write_bytes(b"# coding: ascii\nx = '\xe9'\n")
    ckptkeys.export(root / "ck", root / "done")
    return root


@pytest.fixture
def here(world: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """In ``world``, with its unreadable files unreadable and its read-only folder read-only, even for root."""
    monkeypatch.chdir(world)
    unreadable = {
        str(world / "unreadable.pt"),
        str(world / "unreadable.py"),
        str(world / "unreadable" / "global_step3" / "mp_rank_00_model_states.pt"),
    }
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.abspath(os.fspath(path)) in unreadable and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)  # what chmod 000 does, for root too
    real_access = os.access
    readonly = str(world / "readonly")
    monkeypatch.setattr(os, "access", lambda p, m: os.path.abspath(os.fspath(p)) != readonly and real_access(p, m))
    for out in world.glob("out-*"):
        shutil.rmtree(out)
    return world


def _run(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as stopped:  # --version, as argparse does it
        assert isinstance(stopped.code, int)
        status = stopped.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("name", CASES)
def test_every_command_follows_the_convention(
    name: str, here: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = CASES[name]
    command = entry.argv[0] if entry.argv and entry.argv[0] in COMMANDS else None
    status, out, err = _run(entry.argv, capsys)
    assert status == entry.status, err
    if entry.status == OK:
        assert "ckptkeys" not in err or command in ("export", "universal")  # their closing lines say what they wrote
        return
    if entry.says is None and entry.status == PROBLEMS:  # the report, or the findings, say it
        # lint ends with ruff's summary line on stderr ("Found 2 problems."), nothing else
        assert err == "" or (command == "lint" and re.fullmatch(r"Found \d+ problems?( \(.*\))?\.\n", err)), err
        return
    prefix = f"ckptkeys {command}: " if command is not None else "ckptkeys: "
    assert err.count("\n") == 1 and err.startswith(prefix), err  # one line, no traceback
    if entry.says is not None:
        assert err[len(prefix) :].startswith(entry.says), err
    if command is not None and entry.json:  # with --json: the same error as a document on standard output
        status, out, err_json = _run((*entry.argv, "--json"), capsys)
        if command in ("export", "universal") and "--json goes with --dry-run" in err_json:
            status, out, err_json = _run((*entry.argv, "--json", "--dry-run"), capsys)
        assert status == entry.status
        document = json.loads(out)
        assert document["command"] == command
        assert document["exit"] == {"status": status, "meaning": _status.EXIT_MEANINGS[status]}
        assert document["error"]["message"] == err_json.strip().removeprefix(prefix).split(" (usage: ")[0]


def _python_patterns() -> re.Pattern[str]:
    """What a Python call or keyword looks like in a message: every keyword parameter of the
    public API (``overwrite=``, ``tp_rank=``, ``kind=``), a call of a ckptkeys function or of any
    function with no arguments (``ckptkeys.read(``, ``read()``), a traceback, the repr of an object
    or an exception."""
    keywords = set()
    for name in ckptkeys.__all__:
        value = getattr(ckptkeys, name)
        if callable(value):
            try:
                parameters = pyinspect.signature(value).parameters
            except (TypeError, ValueError):
                continue
            keywords |= {p for p in parameters if p not in ("self", "path", "args", "kwargs")}
    assert {"overwrite", "tp_rank", "dtype", "save", "weights", "limits", "tag"} <= keywords
    spelled = "|".join(sorted(map(re.escape, keywords)))
    return re.compile(
        rf"\b(?:{spelled})=|\bckptkeys\.\w+\(|\b\w+\(\)|Traceback|object at 0x|<ckptkeys\.|\b\w+Error\('"
    )


PYTHON = _python_patterns()
# Failure paths beyond the table's, each a message that spoke Python before issue 21.
MORE = {
    "tensor parallel without a rank": case("export tp out-x", USAGE, "tp/global_step3: is tensor parallel"),
    "tensor parallel, a rank it lacks": case(
        "export tp out-x --tp-rank 5", USAGE, "tp/global_step3: has no mp_rank 05"
    ),
    "module weights of tensor parallel": case("export tp out-x --weights module", USAGE, "tp/global_step3: is tensor"),
    "an empty latest": case("export emptylatest out-x", USAGE, "emptylatest/latest: is empty: it names no tag (tags: global_step3); --tag TAG"),
    "a tag folder, another tag": case("export ck/global_step3 out-x --tag nope", USAGE, "ck/global_step3: is the tag"),
    "--json without --dry-run": case("export ck out-x --json", USAGE, "--json goes with --dry-run"),
    "--shard out of range": case("export ck out-x --shard 3/2", USAGE, "--shard '3/2': expected K/N"),
    "--index-only of one file": case("export ck out-x --index-only", USAGE, "out-x: the export is one file"),
    "inspect without PATH": case("inspect", USAGE, "PATH is required (or --example)"),
}


def test_the_python_patterns_are_those_of_the_old_messages() -> None:
    """The patterns catch what the command said before (issue 21), and not what it says now."""
    old = [
        "ckptkeys export: out/model.safetensors: already exists: pass overwrite=True to replace it",
        "ckptkeys export: tp/global_step3: ... export one rank's shard as it is with --tp-rank K (tp_rank=K)",
        "ckptkeys export: afile: is a file, not a checkpoint folder (ckptkeys.read() reads one file)",
        "ckptkeys inspect: x.pt: exceeds the reader's limit max_depth=100 (raise it with Limits(max_depth=...))",
        "Traceback (most recent call last):",
    ]
    assert all(PYTHON.search(line) for line in old)
    assert not PYTHON.search("ckptkeys export: done/model.safetensors: already exists; --overwrite replaces it")


@pytest.mark.parametrize("name", [*CASES, *MORE])
def test_no_message_speaks_python(name: str, here: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = CASES.get(name) or MORE[name]
    status, out, err = _run(entry.argv, capsys)
    assert status == entry.status, err
    assert not PYTHON.search(err), err
    if entry.says is not None:
        command = entry.argv[0]
        assert err.startswith(f"ckptkeys {command}: {entry.says}"), err


def test_an_empty_latest_is_said_to_be_empty_with_the_same_code(here: pathlib.Path) -> None:
    problems = ckptkeys.validate("emptylatest")
    latest = [p for p in problems if p.file == os.path.join("emptylatest", "latest")]
    assert [(p.code, p.message) for p in latest] == [("latest-unreadable", "is empty: it names no tag")]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "argv",
    [
        ["lint", "bad.py"],
        ["export", "ck", "out-x", "--dry-run"],
        ["universal", "ck", "--inject-missing-state", "--dry-run"],
        ["inspect", "ck"],
        ["keys", "--json"],
    ],
)
def test_standard_output_that_cannot_be_written_is_74_for_every_command(argv: list[str], world: pathlib.Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "ckptkeys", *argv], cwd=world, env=env, stdout=full, stderr=subprocess.PIPE,
            text=True, check=False,
        )  # fmt: skip
    assert done.returncode == OUTPUT
    assert done.stderr == f"ckptkeys {argv[0]}: cannot write to standard output: No space left on device\n"


def test_lint_reports_an_unreadable_file_as_a_finding(here: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(("lint", "good.py", "unreadable.py"), capsys)[1:] == (
        "unreadable.py:1:1: CK001 cannot be read: Permission denied\n",
        "Found 1 problem.\n",
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_no_file_to_wait_on(here: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lint opened a FIFO given as PATH and waited for a writer for ever; inspect and export refuse it."""
    os.mkfifo("fifo")
    try:
        fifo = "fifo:1:1: CK001 is a FIFO, not a regular file\n"
        assert _run(("lint", "fifo"), capsys) == (PROBLEMS, fifo, "Found 1 problem.\n")
        refused = "ckptkeys inspect: fifo: is a FIFO, not a regular file\n"
        assert _run(("inspect", "fifo"), capsys) == (USAGE, "", refused)
        status, _, err = _run(("export", "ck", "fifo"), capsys)
        assert (status, err) == (USAGE, "ckptkeys export: fifo: is a FIFO, not a folder: the export needs a folder to "
                                 "write into\n")  # fmt: skip
    finally:
        os.unlink("fifo")
