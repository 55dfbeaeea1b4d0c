"""Export against torch.load itself: every exported tensor is torch's value, bit for bit, or refused.

The oracle is tests/export_values.py (``check``). Random files come from seeds, drawn by
hypothesis: ``CKPTKEYS_VALUES_EXAMPLES`` examples of each kind (default 40, a few seconds; the
fuzz script fuzz/fuzz_export_values.py runs the same oracle for as long as it is given).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import struct
import tempfile

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.conftest import ROOT  # noqa: E402
from tests.export_values import (  # noqa: E402
    ZERO0_STATE,
    Case,
    Outcome,
    Storage,
    Tensor,
    big_endian,
    check,
    random_case,
    torch_saved_case,
)

EXAMPLES = int(os.environ.get("CKPTKEYS_VALUES_EXAMPLES", "40"))
VALUES = struct.pack("<4f", 1.5, -2.0, 3.25, 1e-3)


def _check(case: Case, tmp_path: pathlib.Path) -> Outcome:
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    return check(tag, tmp_path / "out")


def test_the_tensor_attribute_list_is_the_installed_torchs() -> None:
    spec = importlib.util.spec_from_file_location("make_tensor_attributes", ROOT / "scripts/make_tensor_attributes.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.OUT.read_text(encoding="utf-8") == script.source(), "run scripts/make_tensor_attributes.py"


def _one(storage: Storage, tensor: Tensor, records: dict[str, bytes], byteorder: bytes | None = b"little") -> Case:
    return Case([storage], {"w": tensor}, records, byteorder)


# The red team's files (issue 19) and their neighbours: torch.load's values, or a refusal.
CASES = {
    "big-endian float32": _one(Storage("0", "float32", 4), Tensor(0, 0, (4,), (1,)), {"0": VALUES}, b"big"),
    "big-endian complex64": _one(Storage("0", "complex64", 2), Tensor(0, 0, (2,), (1,)), {"0": VALUES}, b"big"),
    "big-endian bool": _one(Storage("0", "bool", 16), Tensor(0, 0, (16,), (1,)), {"0": bytes(range(16))}, b"big"),
    "big-endian uint16 in a float32 storage": _one(
        Storage("0", "float32", 4), Tensor(0, 1, (2,), (1,), dtype="uint16"), {"0": VALUES}, b"big"
    ),
    "big-endian int32 in an untyped storage": _one(
        Storage("0", "uint8", 16, untyped=True), Tensor(0, 0, (4,), (1,), dtype="int32"), {"0": VALUES}, b"big"
    ),
    "neg metadata": _one(Storage("0", "float32", 4), Tensor(0, 0, (4,), (1,), metadata={"neg": True}), {"0": VALUES}),
    "conj metadata": _one(
        Storage("0", "complex64", 2), Tensor(0, 0, (2,), (1,), metadata={"conj": True}), {"0": VALUES}
    ),
    "ignored metadata": _one(Storage("0", "float32", 4), Tensor(0, 0, (4,), (1,), metadata={"x": True}), {"0": VALUES}),
    "state replaces data": Case(
        [Storage("0", "float32", 4), Storage("1", "float32", 4)],
        {"w": Tensor(0, 0, (4,), (1,), wrap="parameter_state", state={"data": "@o"}), "o": Tensor(1, 0, (4,), (1,))},
        {"0": VALUES, "1": bytes(16)},
    ),
    "from_type state replaces data": Case(
        [Storage("0", "float32", 4), Storage("1", "float32", 4)],
        {"w": Tensor(0, 0, (4,), (1,), wrap="from_type", state={"data": "@o"}), "o": Tensor(1, 0, (4,), (1,))},
        {"0": VALUES, "1": bytes(16)},
    ),
    "plain state": _one(
        Storage("0", "float32", 4), Tensor(0, 0, (4,), (1,), wrap="parameter_state", state={"note": 1}), {"0": VALUES}
    ),
    "subclass": _one(Storage("0", "float32", 4), Tensor(0, 0, (4,), (1,), wrap="subclass", state={}), {"0": VALUES}),
    "keys 2 and '2'": Case(
        [Storage(2, "float32", 4), Storage("2", "int64", 2)],
        {"f": Tensor(0, 0, (4,), (1,)), "i": Tensor(1, 0, (2,), (1,))},
        {"2": VALUES},
    ),
    "key with a NUL": _one(Storage("0\x00x", "float32", 4), Tensor(0, 0, (4,), (1,)), {"0": VALUES}),
    "bytes key": _one(Storage(b"0", "float32", 4), Tensor(0, 0, (4,), (1,)), {"b'0'": VALUES}),
    "bytes type name and location": _one(
        Storage("0", "float32", 4, typename=b"storage", location=b"cpu"), Tensor(0, 0, (4,), (1,)), {"0": VALUES}
    ),
    "record longer than the pickle says": _one(Storage("0", "float32", 3), Tensor(0, 0, (3,), (1,)), {"0": VALUES}),
    "transposed view": _one(Storage("0", "float32", 4), Tensor(0, 0, (2, 2), (1, 2)), {"0": VALUES}),
    "zero stride": _one(Storage("0", "float32", 4), Tensor(0, 1, (3, 2), (0, 1)), {"0": VALUES}),
    "offset": _one(Storage("0", "float32", 4), Tensor(0, 2, (2,), (1,)), {"0": VALUES}),
    "empty storage mentioned twice": Case(
        [Storage("0", "float32", 0), Storage("0", "int32", 0)],
        {"a": Tensor(0, 0, (0,), (1,)), "b": Tensor(1, 0, (0,), (1,))},
        {"0": b""},
    ),
    "int tensor that requires grad": _one(
        Storage("0", "int32", 4), Tensor(0, 0, (4,), (1,), requires_grad=True), {"0": VALUES}
    ),
    "_v3 tensor that requires grad": _one(
        Storage("0", "uint8", 16, untyped=True), Tensor(0, 0, (4,), (1,), dtype="float32", requires_grad=True),
        {"0": VALUES},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_export_is_torchs_value_or_a_refusal(name: str, tmp_path: pathlib.Path) -> None:
    outcome = _check(CASES[name], tmp_path)
    assert outcome.findings == []
    assert outcome.exported or outcome.refused or outcome.both_failed


@pytest.mark.parametrize(
    ("name", "expected"),
    [("big-endian float32", "exported"), ("keys 2 and '2'", "exported"), ("neg metadata", "refused"),
     ("state replaces data", "refused"), ("subclass", "refused"), ("transposed view", "refused"),
     ("record longer than the pickle says", "both_failed"), ("conj metadata", "refused"),
     ("int tensor that requires grad", "both_failed"), ("_v3 tensor that requires grad", "both_failed")],
)  # fmt: skip
def test_the_outcome_is_the_one_expected(name: str, expected: str, tmp_path: pathlib.Path) -> None:
    outcome = _check(CASES[name], tmp_path)
    assert bool(getattr(outcome, expected))


def test_a_big_endian_file_gives_the_values_of_its_little_endian_twin(tmp_path: pathlib.Path) -> None:
    case = random_case(7)
    little = Case(case.storages, case.tensors, case.records, b"little", case.protocol)
    assert _check(big_endian(little), tmp_path).findings == []


def test_torch_save_of_a_neg_view_is_refused_and_its_base_exported(tmp_path: pathlib.Path) -> None:
    tag = tmp_path / "ckpt" / "global_step1"
    tag.mkdir(parents=True)
    base = torch.tensor([1.0, -2.0, 3.0])
    module = {"neg": base._neg_view(), "base": base}
    torch.save({"module": module, "buffer_names": [], **ZERO0_STATE}, tag / "mp_rank_00_model_states.pt")
    outcome = check(tag, tmp_path / "out")
    assert outcome.findings == []
    assert outcome.refused is not None
    assert "module['neg']" in outcome.refused


_FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.integers(0, 2**32 - 1))
def test_random_files_export_torchs_values_or_refuse(seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tag = pathlib.Path(folder) / "ckpt" / "global_step1"
        random_case(seed).write(tag)
        assert check(tag, pathlib.Path(folder) / "out").findings == [], f"random_case({seed})"


@_FUZZ
@given(st.integers(0, 2**32 - 1))
def test_torch_saved_files_export_torchs_values_or_refuse(seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tag = pathlib.Path(folder) / "ckpt" / "global_step1"
        torch_saved_case(seed, tag)
        assert check(tag, pathlib.Path(folder) / "out").findings == [], f"torch_saved_case({seed})"
