"""The ckptkeys command, run as users run it: the installed script and python -m."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import ckptkeys
from ckptkeys import _render


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
    assert "unknown group 'OptimiserKeys'" in result.stderr and "OptimizerKeys" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    assert run("script").returncode == 2
    assert run("script", "keys", "--markdown", "--json").returncode == 2
    assert run("script", "frobnicate").returncode == 2
