"""Export's arguments: a value an argument cannot take is an :class:`ExportError` whose ``option``
names that keyword argument (a ``ValueError`` too where no file is at fault), and the command
exits 2 naming the option as typed, never as Python spells it; a refusal says what is true of its
class of problem (security, incompleteness, files that disagree)."""

from __future__ import annotations

import ast
import pathlib
import pickle
import shutil
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ExportError
from ckptkeys._cli._main import main
from ckptkeys._export import _refuse
from ckptkeys._export._types import OptionError, parse_size

from .conftest import FIXTURES, ROOT

BF16 = FIXTURES / "z2_bf16_ws2"
TAG = BF16 / "global_step3"
# Python's spellings of the options, which the command never prints.
KEYWORDS = ("strip_prefix", "max_shard_size", "tp_rank", "index_only", "dtype=", "weights=", "save=", "tag=")

# (keyword arguments of plan_export, the option at fault, whether no file is at fault: a ValueError)
PLAN_CASES: list[tuple[dict[str, Any], str, bool]] = [
    ({"dtype": "bf8"}, "dtype", True),
    ({"weights": "master"}, "weights", True),
    ({"strip_prefix": ""}, "strip_prefix", True),
    ({"strip_prefix": 5}, "strip_prefix", True),
    ({"strip_prefix": "zzz."}, "strip_prefix", False),
    ({"tp_rank": -1}, "tp_rank", True),
    ({"tp_rank": "0"}, "tp_rank", True),
    ({"tp_rank": 5}, "tp_rank", False),
    ({"max_shard_size": True}, "max_shard_size", True),
    ({"max_shard_size": 1.5}, "max_shard_size", True),
    ({"max_shard_size": None}, "max_shard_size", True),
    ({"max_shard_size": "1.5.5"}, "max_shard_size", True),
    ({"max_shard_size": 0}, "max_shard_size", True),
    ({"max_shard_size": "0GB"}, "max_shard_size", True),
    ({"tag": "nope"}, "tag", False),
    ({"save": "checkpoint-1"}, "save", True),
]


@pytest.mark.parametrize(("kwargs", "option", "value_error"), PLAN_CASES, ids=[repr(c[0]) for c in PLAN_CASES])
def test_every_bad_argument_of_plan_export_names_its_option(
    kwargs: dict[str, Any], option: str, value_error: bool
) -> None:
    with pytest.raises(ExportError) as caught:
        ckptkeys.plan_export(BF16, **kwargs)
    assert caught.value.option == option
    assert isinstance(caught.value, ValueError) is value_error
    if isinstance(caught.value, OptionError):
        copy = pickle.loads(pickle.dumps(caught.value))
        assert (str(copy), copy.option, copy.path, copy.reason) == (
            str(caught.value), option, caught.value.path, caught.value.reason
        )  # fmt: skip


def test_max_shard_size_of_another_type_names_the_accepted_forms() -> None:
    for size in (True, False, 1.5, None, b"5GB", [5]):
        with pytest.raises(ValueError, match=r"^max_shard_size must be an int of bytes or a str such as '5GB'"):
            parse_size(size)  # type: ignore[arg-type]
    assert parse_size(1) == 1 and parse_size("5GB") == 5 * 10**9  # the accepted forms still are


# The same mistakes on the command line: (arguments after CHECKPOINT OUT_DIR, the option as typed).
CLI_CASES = [
    (["--strip-prefix", "zzz."], "--strip-prefix"),
    (["--strip-prefix", ""], "--strip-prefix"),
    (["--max-shard-size", "1.5.5"], "--max-shard-size"),
    (["--max-shard-size", "0"], "--max-shard-size"),
    (["--tp-rank", "5"], "--tp-rank"),
    (["--tag", "nope"], "--tag"),
]


@pytest.mark.parametrize(("args", "typed"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_a_bad_option_value_is_a_usage_error_naming_the_option_as_typed(
    args: list[str], typed: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(BF16), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckptkeys export: ") and err.count("\n") == 1
    assert typed in err
    assert not any(keyword in err for keyword in KEYWORDS), err
    assert not (tmp_path / "out").exists()


def test_save_off_a_run_folder_names_save(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="not a run folder") as caught:
        ckptkeys.plan_export(TAG, save="checkpoint-1")
    assert caught.value.option == "save"  # type: ignore[attr-defined]
    assert main(["export", str(TAG), str(tmp_path / "out"), "--save", "checkpoint-1"]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "--save is for a run folder" in err


def test_write_export_names_its_options(tmp_path: pathlib.Path) -> None:
    plan = ckptkeys.plan_export(BF16, max_shard_size=4096)
    with pytest.raises(OptionError, match=r"^shard must be \(K, N\)") as shard:
        ckptkeys.write_export(plan, tmp_path / "a", shard=(0, 2))
    with pytest.raises(OptionError, match="^index_only goes without shard") as both:
        ckptkeys.write_export(plan, tmp_path / "b", shard=(1, 2), index_only=True)
    one = ckptkeys.plan_export(BF16)
    with pytest.raises(ExportError) as alone:
        ckptkeys.write_export(one, tmp_path / "c", index_only=True)
    assert isinstance(shard.value, ValueError) and isinstance(both.value, ValueError)  # as before
    assert [shard.value.option, both.value.option, alone.value.option] == ["shard", "index_only", "index_only"]


# The functions whose arguments the user gives: none raises a bare ValueError or TypeError
# (each is an OptionError, naming its keyword argument).
ARGUMENT_CHECKS = {
    "_export/_entry.py": ("plan_export", "_plan"),
    "_export/_names.py": ("strip_prefix",),
    "_export/_types.py": ("parse_size",),
    "_export/_write.py": ("write_export", "export"),
}


def test_no_argument_check_raises_a_bare_value_error() -> None:
    src = ROOT / "src" / "ckptkeys"
    checked = 0
    for relpath, names in ARGUMENT_CHECKS.items():
        tree = ast.parse((src / relpath).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                checked += 1
                for raised in ast.walk(node):
                    if isinstance(raised, ast.Raise) and isinstance(raised.exc, ast.Call):
                        called = raised.exc.func
                        assert not (isinstance(called, ast.Name) and called.id in ("ValueError", "TypeError")), (
                            f"{relpath}:{raised.lineno}: a bare {called.id} in {node.name}"
                        )
    assert checked == sum(len(names) for names in ARGUMENT_CHECKS.values())


def _copy(tmp_path: pathlib.Path) -> pathlib.Path:
    shutil.copytree(BF16, tmp_path / "save")
    return tmp_path / "save"


def test_a_security_refusal_says_code_would_run(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(tmp_path)
    shard = root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.")  # what torch.load would run
    with pytest.raises(ExportError, match="code-execution") as caught:
        ckptkeys.plan_export(root)
    assert "names code that torch.load would run" in caught.value.reason
    assert "incomplete or damaged" not in caught.value.reason
    assert main(["export", str(root), str(tmp_path / "out")]) == 1
    assert "names code that torch.load would run" in capsys.readouterr().err


def test_an_incomplete_save_is_refused_as_such(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path)
    (root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ExportError, match=r"not exported: the checkpoint is incomplete or damaged"):
        ckptkeys.plan_export(root)


@pytest.mark.parametrize(
    ("code", "refusal"),
    [
        ("code-execution", "security"),
        ("torchscript-archive", "security"),
        ("ambiguous-file", "ambiguous"),
        ("unsupported-format", "ambiguous"),
        ("missing-rank", "incomplete"),
        ("truncated-file", "incomplete"),
        ("unreadable-file", "incomplete"),
        ("missing-key", "incomplete"),
        ("partition-count-mismatch", "inconsistent"),
        ("stage-mismatch", "inconsistent"),
    ],
)
def test_each_refusal_class(code: str, refusal: str) -> None:
    assert _refuse.refusal(code) == refusal


def test_every_error_code_has_a_refusal_class_whose_words_are_its_own() -> None:
    from ckptkeys._check._codes import CODES
    from ckptkeys._check._problems import Severity

    classes = {_refuse.refusal(code) for code, severity in CODES.items() if severity is Severity.ERROR}
    assert classes == {"security", "ambiguous", "incomplete", "inconsistent"}
    said = set(_refuse._REFUSALS.values())
    assert len(said) == 4 and sum("incomplete" in s for s in said) == 1  # only one class says incomplete
