"""Issue 12 against torch itself (CI on 3.11 with torch 2.13): what the cases claim, what "allowed" claims.

- Each case is loaded by ``torch.load(weights_only=False)`` in a subprocess with a canary payload:
  the canary appears exactly where the case says torch runs the payload (so the harness is not
  blind), and wherever it appears ckptkeys flagged the file (tests/test_security.py's rule).
- Every global ckptkeys calls "allowed", over every checkpoint in tests/data and every case, is
  accepted by torch's own weights-only unpickler asked directly; the tables are torch's.
- The differential oracle of the fuzz target (tests/differential.py) finds nothing on them, and
  finds the difference when ckptkeys' globals are withheld.
"""

from __future__ import annotations

import json
import pathlib

import pytest

import ckptkeys
from ckptkeys._cli import _main as _cli
from ckptkeys._read import _globals, _torch

from . import differential
from .conftest import DATA
from .security_cases import Case, build_cases
from .test_security import flagged

torch = pytest.importorskip("torch")

def _checkpoints() -> list[pathlib.Path]:
    return sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth", ".ckpt", ".bin"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Case, pathlib.Path]]:
    root = tmp_path_factory.mktemp("cases")
    (root / "canaries").mkdir()
    built = build_cases(str(root / "canaries"))
    paths = []
    for case in built:
        path = root / f"{case.name}.pt"
        path.write_bytes(case.data)
        paths.append(path)
    differential.torch_load_all(paths, root)
    return list(zip(built, paths, strict=True))


def test_torch_runs_what_each_case_says_and_ckptkeys_flags_it(
    cases: list[tuple[Case, pathlib.Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    ran_count = 0
    for case, path in cases:
        ran = pathlib.Path(case.canary).exists()
        ran_count += ran
        if case.runs is not None:
            assert ran == case.runs, case.name
        if ran:
            status = _cli.main(["inspect", "--json", str(path)])
            assert flagged(status, json.loads(capsys.readouterr().out)), case.name
    assert ran_count >= 36  # the control: every case marked to run does run under torch


def test_allowed_table_is_torchs() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    assert set(_get_allowed_globals()) == _globals.TORCH_ALLOWED_GLOBALS


def test_weights_only_renaming_is_torchs() -> None:
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    assert IMPORT_MAPPING == _globals._WEIGHTS_ONLY_IMPORTS
    assert NAME_MAPPING == _globals._WEIGHTS_ONLY_NAMES


def test_storage_names_are_torchs() -> None:
    from torch.storage import _storage_type_to_dtype_map

    names = {name for name in _torch.STORAGE_DTYPES if name != "UntypedStorage"}
    assert names == set(_storage_type_to_dtype_map())
    for name, dtype in _storage_type_to_dtype_map().items():
        assert _torch.STORAGE_DTYPES[name] == str(dtype).removeprefix("torch.")


def _globals_of(path: pathlib.Path) -> list[ckptkeys.GlobalRef]:
    try:
        return list(ckptkeys.read(path).globals)
    except ckptkeys.ReadError as error:
        return list(error.globals)


def test_allowed_claims_hold(cases: list[tuple[Case, pathlib.Path]]) -> None:
    paths = _checkpoints() + [path for _, path in cases]
    allowed = [ref for path in paths for ref in _globals_of(path) if _globals.classify(ref) == "allowed"]
    assert len({ref.qualname for ref in allowed}) >= 10  # rebuilds, dtypes, containers, storages
    assert differential.allowed_claims_hold(allowed) == []


def test_oracle_finds_nothing(cases: list[tuple[Case, pathlib.Path]]) -> None:
    paths = _checkpoints() + [path for _, path in cases]
    assert len(paths) > 150
    found = {str(p): differential.findings(str(p)) for p in paths}
    assert {p: f for p, f in found.items() if f} == {}


def test_oracle_is_not_blind(cases: list[tuple[Case, pathlib.Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    path = next(p for case, p in cases if case.name == "zip-dotted-global-p4")
    real = ckptkeys.read

    def without_globals(target: object, **kwargs: object) -> ckptkeys.Checkpoint:
        checkpoint = real(target, **kwargs)  # type: ignore[arg-type]
        return ckptkeys.Checkpoint(checkpoint.path, checkpoint.data, (), {}, checkpoint.format, checkpoint.size)

    monkeypatch.setattr(ckptkeys, "read", without_globals)
    assert differential.findings(str(path))
