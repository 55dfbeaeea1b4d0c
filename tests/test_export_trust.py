"""Export trusts a tensor's bytes only where nothing else in the file can change what torch.load gives.

The red team's second round, built pickle by pickle (no torch): a call after the state dict is
built (``torch.nn.init.zeros_``, ``operator.setitem``), a Parameter rebuilt over a module
tensor's storage whose pickled state sets ``real`` (globals ``weights_only=True`` allows, outside
the module), and keys that are not one str per tensor. Each export wrote other values than
torch.load gives, or a file safetensors refuses, with exit 0; each is now refused, naming it.
"""

from __future__ import annotations

import collections
import io
import pathlib
import struct
from typing import Any

import pytest

import ckptkeys
from tests.export_values import FILE, ZERO0_STATE, Case, Global, Storage, Tensor, _Call, _Pickler

VALUES = struct.pack("<4f", 1.5, -2.0, 3.25, 1e-3)


class _Doctored(Case):
    """The case's state dict, with ``extra(module)`` entries beside it and keys renamed by ``keys``."""

    def __init__(self, extra: Any = None, keys: dict[str, Any] | None = None) -> None:
        super().__init__([Storage("0", "float32", 4)], {"w": Tensor(0, 0, (4,), (1,))}, {"0": VALUES})
        self.extra = extra
        self.keys = keys or {}

    def pickle(self) -> bytes:
        module = collections.OrderedDict((self.keys.get(n, n), self._call(t)) for n, t in self.tensors.items())
        top: dict[str, Any] = {"module": module, "buffer_names": [], **ZERO0_STATE}
        if self.extra is not None:
            top.update(self.extra(module))
        stream = io.BytesIO()
        _Pickler(stream, self.protocol).dump(top)
        return stream.getvalue()


def _refusal(case: Case, tmp_path: pathlib.Path) -> ckptkeys.ExportError:
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    with pytest.raises(ckptkeys.ExportError) as caught:
        ckptkeys.plan_export(tag)
    return caught.value


def test_the_undoctored_case_exports(tmp_path: pathlib.Path) -> None:
    tag = tmp_path / "ckpt" / "global_step1"
    _Doctored().write(tag)
    assert [t.name for t in ckptkeys.plan_export(tag).tensors] == ["w"]


@pytest.mark.parametrize(
    ("module", "name"),
    [("torch.nn.init", "zeros_"), ("operator", "imul"), ("operator", "setitem"), ("operator", "delitem")],
)
def test_a_call_that_can_change_a_tensor_after_it_is_built_is_refused(
    module: str, name: str, tmp_path: pathlib.Path
) -> None:
    def extra(state: dict[str, Any]) -> dict[str, Any]:
        return {"zz": _Call(Global(module, name), (state["w"], 0))}

    error = _refusal(_Doctored(extra), tmp_path)
    assert error.path.endswith(FILE)
    assert f"names {module}.{name}:" in error.reason


@pytest.mark.parametrize("attribute", ["real", "data", "imag"])
def test_a_parameter_whose_state_sets_a_tensor_attribute_anywhere_is_refused(
    attribute: str, tmp_path: pathlib.Path
) -> None:
    """Only allowed globals: Parameter(w) with state {'real': 0.0} writes zeros into w's storage."""

    def extra(state: dict[str, Any]) -> dict[str, Any]:
        rebuild = Global("torch._utils", "_rebuild_parameter_with_state")
        return {"zz": _Call(rebuild, (state["w"], False, collections.OrderedDict(), {attribute: 0.0}))}

    error = _refusal(_Doctored(extra), tmp_path)
    assert "the tensor at zz" in error.reason
    assert f"'{attribute}'" in error.reason


def test_a_plain_extra_attribute_in_a_state_is_trusted(tmp_path: pathlib.Path) -> None:
    def extra(state: dict[str, Any]) -> dict[str, Any]:
        rebuild = Global("torch._utils", "_rebuild_parameter_with_state")
        return {"zz": _Call(rebuild, (state["w"], False, collections.OrderedDict(), {"note": 1}))}

    tag = tmp_path / "ckpt" / "global_step1"
    _Doctored(extra).write(tag)
    assert [t.name for t in ckptkeys.plan_export(tag).tensors] == ["w"]


@pytest.mark.parametrize("key", [7, None, b"w", 1.0])
def test_a_key_that_is_not_a_str_is_refused(key: object, tmp_path: pathlib.Path) -> None:
    error = _refusal(_Doctored(keys={"w": key}), tmp_path)
    assert f"key {key!r} is a {type(key).__name__}, not a str" in error.reason


def test_int_and_str_twins_are_refused(tmp_path: pathlib.Path) -> None:
    """Keys 7 and '7' were both written as "7": a header safetensors refuses."""
    case = _Doctored(keys={"w": 7, "v": "7"})
    case.tensors["v"] = Tensor(0, 0, (2,), (1,))
    assert "key 7 is a int, not a str" in _refusal(case, tmp_path).reason


def test_two_planned_tensors_of_one_name_are_refused(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptkeys._export import _entry, _plan

    real = _plan.plan_zero0

    def twice(*args: Any) -> Any:
        planned = real(*args)
        return [*planned, *planned]

    monkeypatch.setattr(_entry, "plan_zero0", twice)
    assert "two tensors are named 'w'" in _refusal(_Doctored(), tmp_path).reason


def test_deepspeed_s_own_data_classes_are_trusted(tmp_path: pathlib.Path) -> None:
    def extra(state: dict[str, Any]) -> dict[str, Any]:
        return {"ds_stage": _Call(Global("deepspeed.runtime.zero.config", "ZeroStageEnum"), (0,))}

    tag = tmp_path / "ckpt" / "global_step1"
    _Doctored(extra).write(tag)
    assert [t.name for t in ckptkeys.plan_export(tag).tensors] == ["w"]
