"""The ckptkeys command, run as users run it: the installed script and python -m."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._keys import _render


def _script() -> list[str]:
    found = shutil.which("ckptkeys", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ckptkeys")
    if found is None:
        pytest.fail("the ckptkeys console script is not installed (pip install -e .)")
    return [found]


def _module() -> list[str]:
    return [sys.executable, "-m", "ckptkeys"]


COMMANDS = {"script": _script, "module": _module}


def run(how: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([*COMMANDS[how](), *args], capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("how", COMMANDS)
def test_keys_prints_every_member(how: str) -> None:
    result = run(how, "keys")
    assert result.returncode == 0, result.stderr
    for member in ckptkeys.iter_members():
        assert f"{member.name}" in result.stdout
        assert repr(member.value) in result.stdout


def test_keys_text_is_free_of_markup() -> None:
    # Group docstrings are reST (``code``, :class:`Group`); a terminal shows them plain.
    result = run("script", "keys")
    assert result.returncode == 0
    assert "`" not in result.stdout and not re.search(r":\w+:`", result.stdout)
    summary = "Top-level keys of a model-states file (mp_rank_*_model_states.pt; ZeRO-3: zero_pp_rank_*)."
    assert re.search(rf"^ModuleKeys \(\d+\): {re.escape(summary)}$", result.stdout, re.MULTILINE)
    document = json.loads(run("script", "keys", "--json").stdout)
    assert not any("`" in group["description"] for group in document["groups"])


def test_keys_markdown_is_the_reference() -> None:
    result = run("script", "keys", "--markdown")
    assert result.returncode == 0
    assert result.stdout == _render.render_markdown()


def test_keys_json() -> None:
    result = run("script", "keys", "--json")
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1
    names = [g["name"] for g in document["groups"]]
    assert names == [g.__name__ for g in ckptkeys.GROUPS]
    first = document["groups"][0]["members"][0]
    assert set(first) == {"name", "value", "description", "since", "deepspeed_name"}


def test_keys_one_group_case_insensitive() -> None:
    result = run("module", "keys", "optimizerkeys")
    assert result.returncode == 0
    assert result.stdout.startswith("OptimizerKeys (")
    assert "ModuleKeys" not in result.stdout


def test_unknown_group_is_a_usage_error() -> None:
    result = run("script", "keys", "OptimiserKeys")
    assert result.returncode == 2
    assert "no group or key value 'OptimiserKeys'" in result.stderr and "OptimizerKeys" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", COMMANDS)
def test_version(how: str) -> None:
    result = run(how, "--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"ckptkeys {ckptkeys.__version__}\n", "")


def test_version_is_the_installed_distributions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import metadata

    asked = []

    def version(name: str) -> str:
        asked.append(name)
        return "9.8.7"

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == "ckptkeys 9.8.7\n"
    assert asked == ["ckptkeys"]


def test_version_without_a_distribution_is_the_packages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import metadata

    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(SystemExit) as stopped:
        main(["--version", "keys"])  # --version wins over a command, as argparse's own does
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"ckptkeys {ckptkeys.__version__}\n"


def test_the_version_is_written_once() -> None:
    # pyproject.toml takes the distribution's version from ckptkeys.__version__.
    pyproject = (pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "ckptkeys.__version__"}' in pyproject
    assert re.match(r"^\d+\.\d+\.\d+", ckptkeys.__version__)


def test_bad_usage_exits_2() -> None:
    assert run("script").returncode == 2
    assert run("script", "keys", "--markdown", "--json").returncode == 2
    assert run("script", "frobnicate").returncode == 2


# -- inspect and validate ------------------------------------------------------------------------

from .conftest import DATA, FIXTURES  # noqa: E402
from .test_layout import EXPECTED  # noqa: E402


def test_inspect_example_text() -> None:
    result = run("script", "inspect", "--example")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Tag global_step3: ZeRO-2, bf16, dp=2 mp=1 pp=1 tp=1" in out
    assert "parameters: 308" in out
    assert "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt" in out
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in out
    assert "torch.serialization.add_safe_globals([LossScaler, ZeroStageEnum, fragment_address])" in out
    assert "zero_to_fp32     ready" in out
    assert "\033[" not in out  # not a terminal: no colour


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_inspect_json_of_every_fixture(folder: str) -> None:
    result = run("module", "inspect", "--json", str(FIXTURES / folder))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1 and document["kind"] == "save"
    expected = EXPECTED[folder]
    assert document["latest"] == expected.tag
    tag = next(t for t in document["tags"] if t["name"] == expected.tag)
    got = [
        tag[k] for k in ("zero_stage", "precision", "dp_world_size", "mp_world_size", "pp_world_size", "tp_world_size")
    ]
    assert got == [expected.stage, expected.precision, expected.dp, expected.mp, expected.pp, expected.tp]
    assert set(tag["converters"]) == {"zero_to_fp32", "ds_to_universal"}
    assert document["summary"]["error"] == 0
    for entry in tag["files"]:
        assert {"path", "kind", "size", "top_level_keys", "globals"} <= set(entry)
    for problem in tag["problems"]:
        assert set(problem) == {"severity", "code", "file", "key_path", "message"}
    assert not any(key.startswith("_") for key in tag)


def test_inspect_one_file() -> None:
    path = FIXTURES / "z1_fp16_ws2" / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    document = json.loads(run("script", "inspect", "--json", str(path)).stdout)
    assert document["kind"] == "file" and document["tags"] == []
    (entry,) = document["files"]
    assert entry["kind"] == "optim_states" and entry["dp_rank"] == 0
    assert entry["top_level_keys"] == ["optimizer_state_dict", "ds_config", "ds_version"]
    text = run("script", "inspect", "--depth", "2", str(path)).stdout
    assert "  zero_stage: deepspeed.runtime.zero.config.ZeroStageEnum(1)" in text


def test_validate_exit_codes(tmp_path: pathlib.Path) -> None:
    assert run("script", "validate", str(FIXTURES / "z3_bf16_ws2")).returncode == 0
    broken = run("script", "validate", str(DATA / "broken" / "partition_count"))
    assert broken.returncode == 1
    assert "errors (2):" in broken.stdout and "partition-count-mismatch" in broken.stdout
    quiet = run("script", "validate", "--quiet", str(DATA / "broken" / "partition_count"))
    assert quiet.returncode == 1 and quiet.stdout == ""
    missing = run("script", "validate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    empty = run("script", "inspect", str(tmp_path))
    assert empty.returncode == 2 and "holds no DeepSpeed checkpoint" in empty.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = run("script", "validate", str(junk))
    assert result.returncode == 2 and "junk.pt" in result.stderr
    for output in (missing, empty, result):
        assert "Traceback" not in output.stderr
    assert run("script", "inspect").returncode == 2
    assert run("script", "inspect", "--example", str(junk)).returncode == 2


def test_unreadable_file_in_a_folder(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", root)
    (root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"garbage")
    result = run("script", "validate", "--json", str(root))
    assert result.returncode == 1
    problems = json.loads(result.stdout)["tags"][0]["problems"]
    assert [p["code"] for p in problems if p["severity"] == "error"] == ["unreadable-file"]
    text = run("script", "inspect", str(root))
    assert text.returncode == 1 and "UNREADABLE" in text.stdout and "mp_rank_00_model_states.pt" in text.stdout
