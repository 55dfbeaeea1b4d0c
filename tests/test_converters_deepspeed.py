"""The readiness verdicts against DeepSpeed's own converters (needs torch and DeepSpeed 0.19.8).

For every fixture folder, on its ``latest`` tag, run ``get_fp32_state_dict_from_zero_checkpoint``
(zero_to_fp32) in this process and ``python -m deepspeed.checkpoint.ds_to_universal`` in a
subprocess, and assert that each succeeded exactly where ckptkeys said ``ready``. No verdict
is written here by hand: the expectation is what DeepSpeed does.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shutil

import pytest

import ckptkeys

from .conftest import FIXTURES, ds_to_universal

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
pytest.importorskip("torch")
zero_to_fp32 = pytest.importorskip("deepspeed.utils.zero_to_fp32")

FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _verdicts(folder: pathlib.Path) -> tuple[str, dict[str, ckptkeys.Verdict]]:
    report = ckptkeys.validate_folder(folder)
    latest = report.layout.latest
    assert latest is not None
    tag = next(t for t in report.tags if t.layout.name == latest)
    return latest, tag.converters


@pytest.mark.parametrize("folder", FOLDERS)
def test_zero_to_fp32_agrees(folder: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / folder
    shutil.copytree(FIXTURES / folder, root)
    _, verdicts = _verdicts(root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(root))
    except Exception as error:  # whatever DeepSpeed raises is a refusal
        succeeded, what = False, f"{type(error).__name__}: {error}"
    else:
        succeeded, what = True, "succeeded"
    verdict = verdicts["zero_to_fp32"]
    assert verdict.ready == succeeded, (what, verdict)


@pytest.mark.parametrize("folder", FOLDERS)
def test_ds_to_universal_agrees(folder: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / folder
    shutil.copytree(FIXTURES / folder, root)
    latest, verdicts = _verdicts(root)
    result = ds_to_universal(root / latest, tmp_path / "universal")
    verdict = verdicts["ds_to_universal"]
    assert verdict.ready == (result.returncode == 0), (result.stderr[-2000:], verdict)
    if result.returncode == 0:
        output = ckptkeys.validate_folder(tmp_path / "universal")
        assert output.tags[0].layout.universal
        assert not [p for p in output.all_problems if p.severity is ckptkeys.Severity.ERROR]
