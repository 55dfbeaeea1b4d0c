"""ckptkeys lint on code no one here wrote: the installed DeepSpeed 0.19.8 package.

The findings per code must be the figures docs/lint.md records (so the page cannot go stale);
``--fix`` on a copy of the package must leave every file compiling, the main modules importing,
and DeepSpeed's own converters, run from the fixed copy, producing what the original produces.
Skipped where DeepSpeed is not installed.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from ckptkeys.lint import fix_source, iter_python_files, lint_source

from .conftest import FIXTURES, ROOT

pytestmark = pytest.mark.deepspeed

SPEC = importlib.util.find_spec("deepspeed")
if SPEC is None or not SPEC.submodule_search_locations:
    pytest.skip("DeepSpeed is not installed", allow_module_level=True)
PACKAGE = pathlib.Path(next(iter(SPEC.submodule_search_locations)))
NAMED = [
    "runtime/engine.py",
    *sorted(p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "checkpoint").glob("*.py")),
    "runtime/zero/stage_1_and_2.py",
    "runtime/zero/stage3.py",
    "runtime/bf16_optimizer.py",
]
RECORDED = re.compile(r"<!-- deepspeed-0\.19\.8-findings (\{.*?\}) -->")


def _counts(files: list[pathlib.Path]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for path in files:
        counts.update(f.code for f in lint_source(path.read_text(encoding="utf-8"), str(path)))
    return dict(sorted(counts.items()))


def test_findings_are_the_recorded_figures() -> None:
    recorded = json.loads(RECORDED.findall((ROOT / "docs" / "lint.md").read_text(encoding="utf-8"))[0])
    named = _counts([PACKAGE / name for name in NAMED])
    whole = _counts([pathlib.Path(p) for p in iter_python_files([PACKAGE])])
    assert {"named": named, "package": whole} == recorded


def test_known_findings_in_the_named_files() -> None:
    engine = lint_source((PACKAGE / "runtime/engine.py").read_text(encoding="utf-8"), "engine.py")
    assert any(f.code == "CK301" for f in engine)  # from deepspeed.checkpoint.constants import ...
    assert any(f.code == "CK201" and "expert_model_states" in f.message for f in engine)
    converter = lint_source((PACKAGE / "utils/zero_to_fp32.py").read_text(encoding="utf-8"), "zero_to_fp32.py")
    assert any(f.code == "CK202" and "naming.model_states(0)" in f.message for f in converter)


@pytest.fixture(scope="module")
def fixed_copy(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("fixed")
    shutil.copytree(PACKAGE, root / "deepspeed", ignore=shutil.ignore_patterns("__pycache__"))
    changed = 0
    for path in iter_python_files([root / "deepspeed"]):
        source = pathlib.Path(path).read_text(encoding="utf-8")
        new, applied = fix_source(source, lint_source(source, path))
        if applied:
            pathlib.Path(path).write_text(new, encoding="utf-8")
            changed += 1
    assert changed >= 18  # docs/lint.md: 180 findings rewritten in 18 files
    return root


def _env(path: pathlib.Path | None) -> dict[str, str]:
    python_path = [str(ROOT / "src"), *([str(path)] if path else [])]
    return dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=os.pathsep.join(python_path))


def test_fixed_copy_compiles_and_imports(fixed_copy: pathlib.Path) -> None:
    for path in iter_python_files([fixed_copy / "deepspeed"]):
        compile(pathlib.Path(path).read_text(encoding="utf-8"), path, "exec")
    modules = [
        "deepspeed",
        "deepspeed.runtime.engine",
        "deepspeed.runtime.zero.stage_1_and_2",
        "deepspeed.runtime.zero.stage3",
        "deepspeed.runtime.bf16_optimizer",
        "deepspeed.checkpoint.ds_to_universal",
        "deepspeed.checkpoint.universal_checkpoint",
        "deepspeed.utils.zero_to_fp32",
    ]
    code = f"import importlib, deepspeed\nassert deepspeed.__file__.startswith({str(fixed_copy)!r})\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in modules)
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(fixed_copy), capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _convert(python_path: pathlib.Path | None, output: pathlib.Path) -> dict[str, list[str]]:
    """Run ds_to_universal and zero_to_fp32 on the universal-ready fixture; what they wrote."""
    source = FIXTURES / "uc_z2_bf16_ws2"
    code = f"""
import json, subprocess, sys, torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
state = get_fp32_state_dict_from_zero_checkpoint({str(source)!r}, tag="global_step3")
torch.save({{k: v.clone() for k, v in state.items()}}, {str(output / "fp32.pt")!r})
done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
    {str(source / "global_step3")!r}, "--output_folder", {str(output / "universal")!r},
    "--num_extract_workers", "1", "--num_merge_workers", "1"], capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-3000:]
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(python_path), capture_output=True, text=True, check=False, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "files": sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()),
    }


def test_fixed_converters_write_the_same_checkpoints(fixed_copy: pathlib.Path, tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    original, fixed = tmp_path / "original", tmp_path / "fixed"
    original.mkdir()
    fixed.mkdir()
    assert _convert(None, original) == _convert(fixed_copy, fixed)
    for path in sorted(original.rglob("*.pt")):
        twin = fixed / path.relative_to(original)
        a = torch.load(path, weights_only=False)
        b = torch.load(twin, weights_only=False)
        assert _same(a, b), path.relative_to(original)


def _same(a: object, b: object) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and [type(k) for k in a] == [type(k) for k in b]  # plain str keys stayed plain str
            and list(a) == list(b)
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dict__") and not isinstance(a, type):  # e.g. DeepSpeed's LossScaler: compare its state
        return type(a) is type(b) and _same(vars(a), vars(b))
    return type(a) is type(b) and a == b
