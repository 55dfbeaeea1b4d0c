"""Branches of torch 2.13's ``torch.load`` against ckptkeys, on the same bytes (CI on 3.11 with torch).

The rows of docs/security.md's branch table that need torch: TorchScript dispatch (torch's own
``_is_torchscript_zip`` on every variant of tests/torchscript_cases.py, the canary of each payload,
and a module made by ``torch.jit.save``), records miniz extracts without writing, the
``weights_only`` switches and the ``.safetensors`` suffix. Each load of a payload runs in a
subprocess, as in tests/test_security_torch.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import warnings

import pytest

import ckptkeys
from ckptkeys._cli import _main as _cli

from .conftest import DATA
from .test_security import flagged
from .torchscript_cases import Variant, mark_central, torchscript_variants

torch = pytest.importorskip("torch")

_LOAD_ALL = """
import sys, warnings
import torch
warnings.simplefilter("ignore")
for path in sys.argv[1:]:
    try:
        torch.load(path, weights_only=False)
    except BaseException:
        pass
"""


def _torch_load_all(paths: list[pathlib.Path], cwd: pathlib.Path, **env: str) -> None:
    subprocess.run(
        [sys.executable, "-c", _LOAD_ALL, *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=600,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Variant, pathlib.Path, bool]]:
    """Each variant's file and whether its canary appeared under torch.load(weights_only=False)."""
    root = tmp_path_factory.mktemp("torchscript")
    canaries = root / "canaries"
    canaries.mkdir()
    built = torchscript_variants(str(canaries))
    paths = []
    for variant in built:
        path = root / f"{variant.name}.pt"
        path.write_bytes(variant.data)
        paths.append(path)
    _torch_load_all(paths, root)
    ran = {p.name for p in canaries.iterdir()}
    canary_of = {"parameter-class": "parameter"}
    return [(v, p, canary_of.get(v.name, v.name) in ran) for v, p in zip(built, paths, strict=True)]


def _torch_says_torchscript(path: pathlib.Path) -> bool | None:
    """torch.serialization._is_torchscript_zip on the file; None where torch's own check raises."""
    from torch.serialization import _is_torchscript_zip

    try:
        return bool(_is_torchscript_zip(torch._C.PyTorchFileReader(str(path))))
    except (RuntimeError, UnicodeDecodeError):
        return None


def _ckptkeys_refuses_as_torchscript(path: pathlib.Path) -> bool:
    try:
        ckptkeys.read(path)
    except ckptkeys.TorchScriptArchiveError:
        return True
    except ckptkeys.ReadError:
        return False
    return False


def test_ckptkeys_recognises_exactly_what_torch_recognises(variants: list[tuple[Variant, pathlib.Path, bool]]) -> None:
    seen = {}
    for variant, path, _ in variants:
        torch_says = _torch_says_torchscript(path)
        assert torch_says == variant.torchscript, variant.name
        assert _ckptkeys_refuses_as_torchscript(path) == bool(torch_says), variant.name
        seen[torch_says] = True
    assert set(seen) == {True, False, None}  # each kind of answer is among the variants


def test_payloads_run_where_the_variant_says_and_are_flagged(
    variants: list[tuple[Variant, pathlib.Path, bool]], capsys: pytest.CaptureFixture[str]
) -> None:
    ran_count = 0
    for variant, path, ran in variants:
        assert ran == variant.runs, variant.name
        ran_count += ran
        if ran:
            status = _cli.main(["inspect", "--json", str(path)])
            document = json.loads(capsys.readouterr().out)
            assert flagged(status, document) and document["error"]["code"] == "torchscript-archive", variant.name
    assert ran_count == 2  # the control: both payloads run under torch


_SCRIPTED = """
import sys
from typing import Tuple
import torch


class Module(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.marker = torch.zeros(1, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.marker = torch.from_file(self.path, shared=True, size=1, dtype=torch.uint8)


torch.jit.save(torch.jit.script(Module(sys.argv[2])), sys.argv[1])
"""


def test_jit_saved_module_runs_under_torch_load_and_is_flagged(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, canary, script = tmp_path / "model.pt", tmp_path / "canary", tmp_path / "make_module.py"
    script.write_text(_SCRIPTED, encoding="utf-8")  # torch.jit.script reads the class's source file
    subprocess.run([sys.executable, str(script), str(path), str(canary)], check=True, timeout=300, capture_output=True)
    assert not canary.exists()  # saving runs nothing
    _torch_load_all([path], tmp_path)
    assert canary.exists()  # torch.load -> torch.jit.load -> __setstate__
    status = _cli.main(["inspect", "--json", str(path)])
    document = json.loads(capsys.readouterr().out)
    assert flagged(status, document) and document["error"]["code"] == "torchscript-archive"


def test_storage_record_marked_as_a_directory_loads_in_torch_and_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    torch.save({"w": torch.arange(64.0)}, path)
    path.write_bytes(mark_central(path.read_bytes(), b"file/data/0", external=0x10))  # DOS directory attribute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.load(path, weights_only=True)  # no error: the 256 bytes are whatever memory held
    assert loaded["w"].shape == (64,)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="marked as a directory"):
        ckptkeys.read(path)


@pytest.mark.parametrize("variable", ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"])
def test_weights_only_switches_change_nothing_ckptkeys_reports(
    variable: str, tmp_path: pathlib.Path
) -> None:
    """The environment decides whether torch runs the payload; ckptkeys reports it either way."""
    copy = tmp_path / "benign-data.pt"
    copy.write_bytes(next(v for v in torchscript_variants(str(tmp_path)) if v.name == "benign-data").data)
    code = "import sys, torch\ntry:\n    torch.load(sys.argv[1])\nexcept BaseException:\n    pass\n"
    env = {**os.environ, variable: "1"}
    subprocess.run([sys.executable, "-c", code, str(copy)], env=env, capture_output=True, check=True, timeout=300)
    # weights_only=None: forced off, torch.jit.load runs the payload; forced on, torch refuses it.
    assert (tmp_path / "benign-data").exists() == (variable == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    with pytest.raises(ckptkeys.TorchScriptArchiveError):
        ckptkeys.read(copy)


def test_safetensors_suffix_is_read_by_bytes_not_by_name(tmp_path: pathlib.Path) -> None:
    """torch.load reads a path ending in .safetensors with safetensors; ckptkeys reads what the bytes are."""
    pytest.importorskip("safetensors")
    path = tmp_path / "model.safetensors"
    path.write_bytes((DATA / "torch" / "sample_zip.pt").read_bytes())
    with pytest.raises(Exception):  # torch hands it to safetensors, which cannot read a zip
        torch.load(path, weights_only=True)
    assert ckptkeys.read(path).format == "zip"  # a torch zip is shown as one, globals and all
