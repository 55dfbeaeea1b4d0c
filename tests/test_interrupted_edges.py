"""What the red team of issue 20 found past the first version, each now a test: a signal that a
lazy import turns into an ImportError, standard output that cannot be written, pointer files
that name the wrong tag or none, and the jobs of one job array exporting different saves."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys import scan, validate

from .conftest import FIXTURES

DATA = pathlib.Path(__file__).parent / "data"
SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
TRAINER = DATA / "clients" / "hf_trainer_z2_bf16"

# main() in a child that sends itself SIGINT the moment numpy's import machinery starts importing
# `datetime` (numpy turns any exception raised then into an ImportError: "cannot import module").
SIGINT_IN_IMPORT = """
import importlib.abc, os, signal, sys
class Hook(importlib.abc.MetaPathFinder):
    fired = False
    def find_spec(self, name, path, target=None):
        if name == "datetime" and "numpy" in sys.modules and not Hook.fired:
            Hook.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.modules.pop("datetime", None)
sys.meta_path.insert(0, Hook())
from ckptkeys._cli._main import main
status = main(sys.argv[1:])
print("hook fired" if Hook.fired else "hook did not fire", file=sys.stderr)
sys.exit(status)
"""


def _child(code: str, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_during_numpys_lazy_import_ends_as_the_signal(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("numpy")
    out = tmp_path / "out"
    done = _child(SIGINT_IN_IMPORT, "export", str(FIXTURES / "z2_bf16_ws2"), str(out), "-q", "--dtype", "bf16")
    lines = done.stderr.splitlines()
    assert lines[-1] == "hook fired", done.stderr
    assert done.returncode == 130, done.stderr
    assert len(lines) == 2 and lines[0].startswith("ckptkeys export: interrupted (SIGINT)")
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "argv",
    [["keys"], ["validate", str(FIXTURES / "z2_bf16_ws2")], ["inspect", "--json", str(FIXTURES / "z2_bf16_ws2")]],
)
def test_standard_output_that_cannot_be_written_is_one_line(argv: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = _child("import sys\nfrom ckptkeys._cli._main import main\nsys.exit(main(sys.argv[1:]))", *argv,
                      stdout=full)  # fmt: skip
    assert done.returncode == 74
    assert done.stderr == f"ckptkeys {argv[0]}: cannot write to standard output: No space left on device\n"


def test_a_save_folder_without_latest_is_a_warning_naming_the_newest_tag(tmp_path: pathlib.Path) -> None:
    save = tmp_path / "save"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", save)
    assert not [p for p in validate(save) if p.code == "no-latest"]
    (save / "latest").unlink()
    found = [p for p in validate(save) if p.code == "no-latest"]
    assert len(found) == 1 and found[0].severity == "warning" and found[0].file == str(save)
    assert "'global_step3'" in found[0].message


def test_latest_universal_naming_a_tag_that_is_not_universal_is_an_error(tmp_path: pathlib.Path) -> None:
    save = tmp_path / "save"
    shutil.copytree(FIXTURES / "uc_z2_bf16_ws2", save)
    layout = scan(save)
    universal = layout.latest_universal
    others = [t.name for t in layout.tags if not t.universal]
    assert universal is not None and others
    assert not [p for p in validate(save) if p.code == "latest-universal-not-universal"]
    (save / "latest_universal").write_text(others[0])  # a cut or overwritten pointer
    found = [p for p in validate(save) if p.code == "latest-universal-not-universal"]
    assert [(p.severity, p.file) for p in found] == [("error", str(save / "latest_universal"))]


def test_index_only_refuses_shards_of_another_save_of_the_run(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("numpy")
    out = tmp_path / "out"
    from ckptkeys._cli._main import main

    common = [str(TRAINER), str(out), "--max-shard-size", "20KB", "-q"]
    assert main(["export", *common, "--shard", "1/3"]) == 0
    assert main(["export", *common, "--shard", "3/3"]) == 0
    assert main(["export", *common, "--shard", "2/3", "--save", "checkpoint-2"]) == 0  # one job saw another save
    plan = ckptkeys.plan_export(TRAINER, max_shard_size="20KB")
    other = ckptkeys.plan_export(TRAINER, max_shard_size="20KB", save="checkpoint-2")
    assert [s.filename for s in plan.shards] == [s.filename for s in other.shards]  # same names, same sizes
    assert plan.identity() != other.identity()
    assert main(["export", *common, "--index-only"]) == 1
    assert not (out / "model.safetensors.index.json").exists()
