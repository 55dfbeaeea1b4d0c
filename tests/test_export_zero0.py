"""ZeRO-0 fp32 masters without torch: the plan takes them, matched by shape and value, or refuses.

The shared fixture ``z0_fp16_ws1`` (FP16_UnfusedOptimizer: ``fp32_groups``) and files built
pickle by pickle (tests/export_values.py): a module of float16 parameters and an optimizer state
with ``fp32_groups`` or ``fp32_groups_flat`` as DeepSpeed's wrappers write them, then edited: a
master that is not its parameter's value, counts that disagree, a tie. The values the export
writes are proven against DeepSpeed in tests/test_export_zero0_deepspeed.py.
"""

from __future__ import annotations

import collections
import io
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ExportError, plan_export
from ckptkeys._export import _cast
from ckptkeys._export._spans import tensor_span
from ckptkeys._export._zero0 import SAMPLE
from tests.export_values import ZERO0_STATE, Case, Storage, Tensor, _Pickler, zip_file

from .conftest import FIXTURES

np = pytest.importorskip("numpy")


class _Zero0(Case):
    """A ZeRO-0 model-states file: float16 ``module`` entries and the fp32 masters of the wrapper."""

    def __init__(
        self,
        module: dict[str, Any],
        groups: list[list[Any]],
        *,
        flat: bool = False,
        counts: list[int] | None = None,
        buffers: tuple[str, ...] = (),
    ) -> None:
        super().__init__([], {})
        self.flat = flat
        self.buffers = list(buffers)
        self.module = [self._add(f"m.{name}", value.astype("<f2")) for name, value in module.items()]
        self.names = list(module)
        if flat:
            groups = [[np.concatenate([m.ravel() for m in group])] if group else [] for group in groups]
        self.groups = [
            [self._add(f"g{g}.{i}", m.astype("<f4")) for i, m in enumerate(group)] for g, group in enumerate(groups)
        ]
        self.counts = counts if counts is not None else [1 if flat else len(group) for group in groups]

    def _add(self, name: str, value: Any) -> str:
        key = str(len(self.storages))
        self.storages.append(Storage(key, str(value.dtype), value.size))
        stride = tuple(s // value.itemsize for s in value.strides)
        self.tensors[name] = Tensor(len(self.storages) - 1, 0, value.shape, stride)
        self.records[key] = value.tobytes()
        return name

    def pickle(self) -> bytes:
        module = collections.OrderedDict((n, self._call(self.tensors[t])) for n, t in zip(self.names, self.module))
        masters = [[self._call(self.tensors[t]) for t in group] for group in self.groups]
        param_groups = [{"lr": 1e-3, "params": list(range(count))} for count in self.counts]
        optimizer = {
            "dynamic_loss_scale": True,
            "cur_scale": 256,
            "cur_iter": 1,
            "optimizer_state_dict": {"state": {}, "param_groups": param_groups},
            "fp32_groups_flat" if self.flat else "fp32_groups": [m[0] for m in masters] if self.flat else masters,
        }
        stream = io.BytesIO()
        # The keys DeepSpeed always writes (a file without them is refused as incomplete, as validate reports it).
        state = {**ZERO0_STATE, "module": module, "buffer_names": self.buffers, "optimizer": optimizer}
        _Pickler(stream, self.protocol).dump(state)
        return stream.getvalue()


class _Tree(Case):
    """Any other file of a tag: its pickle is ``build(call)``, where ``call(name)`` is the rebuild of
    the tensor made from ``values[name]``."""

    def __init__(self, filename: str, values: dict[str, Any], build: Callable[[Callable[[str], Any]], Any]) -> None:
        super().__init__([], {})
        self.filename = filename
        self.build = build
        for name, value in values.items():
            key = str(len(self.storages))
            self.storages.append(Storage(key, str(value.dtype), value.size))
            stride = tuple(s // value.itemsize for s in value.strides)
            self.tensors[name] = Tensor(len(self.storages) - 1, 0, value.shape, stride)
            self.records[key] = value.tobytes()

    def write(self, tag: pathlib.Path) -> pathlib.Path:
        tag.mkdir(parents=True, exist_ok=True)
        path = tag / self.filename
        path.write_bytes(zip_file(self.pickle(), self.records, self.byteorder))
        return path

    def pickle(self) -> bytes:
        stream = io.BytesIO()
        _Pickler(stream, self.protocol).dump(self.build(lambda name: self._call(self.tensors[name])))
        return stream.getvalue()


def _plan(case: _Zero0, tmp_path: pathlib.Path) -> ckptkeys.ExportPlan:
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    return plan_export(tag)


def _refusal(case: _Zero0, tmp_path: pathlib.Path) -> ExportError:
    with pytest.raises(ExportError) as caught:
        _plan(case, tmp_path)
    assert caught.value.path.endswith("mp_rank_00_model_states.pt")
    return caught.value


def _trained(rng: Any, *shape: int) -> tuple[Any, Any]:
    """A master (float32, not a float16 value: training moved it) and its parameter, the master cast."""
    master = rng.standard_normal(shape).astype("<f4")
    master += np.float32(1e-5)  # off the float16 grid
    return master, master.astype("<f2")


def _origins(plan: ckptkeys.ExportPlan) -> dict[str, tuple[str, str]]:
    return {t.name: (t.origin, t.source_dtype) for t in plan.tensors}


def test_the_fixture_plan_takes_the_fp32_groups() -> None:
    folder = FIXTURES / "z0_fp16_ws1"
    plan = plan_export(folder)
    assert _origins(plan) == {
        "scale": ("buffer", "float32"),
        **{n: ("trainable", "float32") for n in ["emb.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]},
        "frozen.weight": ("frozen", "float16"),
        "frozen.bias": ("frozen", "float16"),  # fc2.bias's shape: its values tell them apart
    }
    model = ckptkeys.read(folder / "global_step3" / "mp_rank_00_model_states.pt")
    (group,) = model.data["optimizer"]["fp32_groups"]
    trained = [t for t in plan.tensors if t.origin == "trainable"]
    assert [t.sources for t in trained] == [(tensor_span(model, m),) for m in group]  # in order, each its own master
    frozen = model.data["module"]["frozen.bias"]
    assert {t.name: t.sources for t in plan.tensors}["frozen.bias"] == (tensor_span(model, frozen),)


def test_an_fp32_run_exports_its_module() -> None:
    plan = plan_export(FIXTURES / "z0_fp32_ws1")
    assert {origin for origin, _ in _origins(plan).values()} == {"module", "buffer"}


def test_a_frozen_twin_before_the_trained_parameter_is_told_apart_by_value(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    fc, fc16 = _trained(rng, 4, 4)
    bias, bias16 = _trained(rng, 4)
    twin = rng.standard_normal((4, 4)).astype("<f2")
    case = _Zero0({"twin.weight": twin, "fc.weight": fc16, "fc.bias": bias16}, [[fc, bias]])
    plan = _plan(case, tmp_path)
    assert _origins(plan) == {
        "twin.weight": ("frozen", "float16"),
        "fc.weight": ("trainable", "float32"),
        "fc.bias": ("trainable", "float32"),
    }


def test_groups_out_of_the_modules_order_are_matched(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    w, w16 = _trained(rng, 3, 2)
    b, b16 = _trained(rng, 3)
    v, v16 = _trained(rng, 2, 3)
    case = _Zero0({"a.weight": w16, "a.bias": b16, "c.weight": v16}, [[b], [v, w]])
    plan = _plan(case, tmp_path)
    path = str(tmp_path / "ckpt" / "global_step1" / "mp_rank_00_model_states.pt")
    offsets = {t.name: t.sources[0].offset for t in plan.tensors}
    model = ckptkeys.read(path)
    groups = model.data["optimizer"]["fp32_groups"]
    assert offsets == {
        "a.weight": tensor_span(model, groups[1][1]).offset,
        "a.bias": tensor_span(model, groups[0][0]).offset,
        "c.weight": tensor_span(model, groups[1][0]).offset,
    }


def test_a_tie_of_equal_values_whose_master_is_those_values_is_harmless(tmp_path: pathlib.Path) -> None:
    """A frozen copy of a parameter whose master never moved (learning rate 0): either choice writes the same bytes."""
    rng = np.random.default_rng(2)
    still16 = rng.standard_normal((4, 4)).astype("<f2")
    case = _Zero0({"twin.weight": still16.copy(), "still.weight": still16}, [[still16.astype("<f4")]])
    plan = _plan(case, tmp_path)
    assert sorted(origin for origin, _ in _origins(plan).values()) == ["frozen", "trainable"]


def test_a_tie_that_would_change_the_export_is_refused_naming_both(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    fc, fc16 = _trained(rng, 4, 4)
    case = _Zero0({"twin.weight": fc16.copy(), "fc.weight": fc16}, [[fc]])
    error = _refusal(case, tmp_path)
    assert "optimizer['fp32_groups'][0][0] equals each of 'twin.weight', 'fc.weight'" in error.reason
    assert "ambiguous" in error.reason


def test_a_harmless_looking_tie_another_master_could_take_is_refused(tmp_path: pathlib.Path) -> None:
    """Two masters, one still the parameters' value and one moved (rounding to it), over two equal
    parameters: which gets which changes the export."""
    rng = np.random.default_rng(11)
    value16 = rng.standard_normal((4,)).astype("<f2")
    still = value16.astype("<f4")
    moved = still + np.abs(still) * np.float32(1e-5)  # rounds back to value16
    assert (moved.astype("<f2") == value16).all() and (moved != still).all()
    case = _Zero0({"a": value16.copy(), "b": value16}, [[still, moved]])
    error = _refusal(case, tmp_path)
    assert "optimizer['fp32_groups'][0][1] equals each of 'a', 'b'" in error.reason
    assert "ambiguous" in error.reason


def test_a_tie_the_sample_cannot_break_is_compared_whole(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(4)
    fc, fc16 = _trained(rng, 3 * SAMPLE)
    twin = fc16.copy()
    twin[SAMPLE + 7] = np.float16(1000.0)  # the same ends, another middle
    case = _Zero0({"twin": twin, "fc": fc16}, [[fc]])
    assert _origins(_plan(case, tmp_path)) == {"twin": ("frozen", "float16"), "fc": ("trainable", "float32")}


def test_a_master_that_is_not_its_parameters_value_is_refused(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(5)
    fc, fc16 = _trained(rng, 4, 4)
    bias, bias16 = _trained(rng, 4)
    edited = bias.copy()
    edited[0] += np.float32(0.5)  # no longer rounds to the module's value
    case = _Zero0({"fc.weight": fc16, "fc.bias": bias16}, [[fc, edited]])
    error = _refusal(case, tmp_path)
    assert "optimizer['fp32_groups'][0][1] differs from every module parameter of its shape (4,)" in error.reason
    assert "'fc.bias'" in error.reason


def test_a_master_without_a_parameter_is_refused(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(6)
    fc, fc16 = _trained(rng, 4, 4)
    extra, _ = _trained(rng, 5)
    case = _Zero0({"fc.weight": fc16}, [[fc, extra]])
    error = _refusal(case, tmp_path)
    assert "optimizer['fp32_groups'][0][1] matches no free module parameter of its shape (5,)" in error.reason


def test_counts_that_disagree_with_the_param_groups_are_refused(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(7)
    fc, fc16 = _trained(rng, 4, 4)
    bias, bias16 = _trained(rng, 4)
    case = _Zero0({"fc.weight": fc16, "fc.bias": bias16}, [[fc, bias]], counts=[3])
    error = _refusal(case, tmp_path)
    reason = "optimizer['fp32_groups'][0] holds 2 masters, optimizer_state_dict['param_groups'][0] lists 3"
    assert reason in error.reason
    case = _Zero0({"fc.weight": fc16, "fc.bias": bias16}, [[fc, bias]], counts=[2, 0])
    error = _refusal(case, tmp_path / "two")
    assert "holds 1 groups, optimizer_state_dict lists 2" in error.reason


def test_flat_groups_are_cut_in_order(tmp_path: pathlib.Path) -> None:
    """FP16_Optimizer (FusedAdam): one flat fp32 tensor per group, the parameters joined, no padding."""
    rng = np.random.default_rng(8)
    fc, fc16 = _trained(rng, 4, 4)
    bias, bias16 = _trained(rng, 4)
    twin = rng.standard_normal((4, 4)).astype("<f2")
    case = _Zero0({"twin.weight": twin, "fc.weight": fc16, "fc.bias": bias16}, [[fc, bias]], flat=True)
    plan = _plan(case, tmp_path)
    assert _origins(plan)["twin.weight"] == ("frozen", "float16")
    model = ckptkeys.read(tmp_path / "ckpt" / "global_step1" / "mp_rank_00_model_states.pt")
    (flat,) = model.data["optimizer"]["fp32_groups_flat"]
    start = tensor_span(model, flat).offset
    spans = {t.name: t.sources for t in plan.tensors if t.origin == "trainable"}
    assert [(s.offset - start, s.length) for (s,) in spans.values()] == [(0, 64), (64, 16)]
    assert list(spans) == ["fc.weight", "fc.bias"]


def test_a_flat_group_longer_than_its_parameters_is_refused(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(9)
    fc, fc16 = _trained(rng, 4, 4)
    tail, _ = _trained(rng, 3)
    case = _Zero0({"fc.weight": fc16}, [[fc, tail]], flat=True)
    error = _refusal(case, tmp_path)
    assert "optimizer['fp32_groups_flat'][0] from element 16 matches no free module parameter" in error.reason


def test_without_numpy_the_masters_are_refused_saying_so(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Any:
        raise ImportError("no numpy")

    monkeypatch.setattr(_cast, "require_numpy", missing)
    rng = np.random.default_rng(10)
    fc, fc16 = _trained(rng, 4, 4)
    error = _refusal(_Zero0({"fc.weight": fc16}, [[fc]]), tmp_path)
    assert "that needs numpy, which is not installed: pip install numpy (from a checkout of ckptkeys: pip install " \
        "'.[export]')" in error.reason  # fmt: skip
    # The module's weights as saved need no matching; fp16, they need no cast as fp16 either.
    assert error.option == "weights"
    assert error.ways == ((("weights", "module"), ("dtype", "fp16")),)  # type: ignore[attr-defined]


EXPERT = "moe.deepspeed_moe.experts.deepspeed_experts."


def _moe(tmp_path: pathlib.Path, edit: bool = False) -> pathlib.Path:
    """MoE without ZeRO, two experts over two expert-parallel ranks: rank 0's masters in the model
    states' optimizer (and expp_rank_0's), rank 1's expert master only in expp_rank_1's."""
    rng = np.random.default_rng(12)
    dense, dense16 = _trained(rng, 3, 3)
    experts = [_trained(rng, 3, 3) for _ in range(2)]
    tag = tmp_path / "ckpt" / "global_step1"
    _Zero0({"dense.weight": dense16}, [[dense], [experts[0][0]]]).write(tag)
    for e, (_, value16) in enumerate(experts):
        name = f"{EXPERT}{e}.weight"

        def expert_file(call: Callable[[str], Any], name: str = name) -> Any:
            return {name: call(name)}

        _Tree(f"layer_0_expert_{e}_mp_rank_00_model_states.pt", {name: value16}, expert_file).write(tag)
    for rank in range(2):
        master = experts[rank][0].copy()
        if edit and rank == 1:
            master[0, 0] += np.float32(0.5)

        def build(call: Callable[[str], Any]) -> Any:
            groups = [{"params": [0], "name": "parameters"}, {"params": [1], "name": "ep_size_2", "moe": True}]
            state = {"optimizer_state_dict": {"state": {}, "param_groups": groups}}
            return {"optimizer": {**state, "fp32_groups": [[call("dense")], [call("expert")]]}}

        values = {"dense": dense, "expert": master}
        _Tree(f"expp_rank_{rank}_mp_rank_00_optim_states.pt", values, build).write(tag)
    return tag


def test_moe_experts_take_the_masters_of_their_expert_parallel_rank(tmp_path: pathlib.Path) -> None:
    tag = _moe(tmp_path)
    plan = plan_export(tag)
    assert plan.layout == "zero-0 moe"
    assert _origins(plan) == {
        "dense.weight": ("trainable", "float32"),
        f"{EXPERT}0.weight": ("expert", "float32"),
        f"{EXPERT}1.weight": ("expert", "float32"),
    }
    paths = {t.name: {pathlib.Path(s.path).name for s in t.sources} for t in plan.tensors}
    assert paths[f"{EXPERT}0.weight"] == {"mp_rank_00_model_states.pt"}
    assert paths[f"{EXPERT}1.weight"] == {"expp_rank_1_mp_rank_00_optim_states.pt"}


def test_an_expert_master_that_is_not_its_experts_value_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError) as caught:
        plan_export(_moe(tmp_path, edit=True))
    reason = caught.value.reason
    assert "expp_rank_1_mp_rank_00_optim_states.pt optimizer['fp32_groups'][1][0] differs from every" in reason
