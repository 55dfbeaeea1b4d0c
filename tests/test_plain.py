"""ckptkeys.plain(): members out, structure kept, leaves untouched."""

from __future__ import annotations

import collections
import enum
import io
import pickle
import subprocess
import sys
import textwrap
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import ModuleKeys, OptimizerKeys, plain

from .conftest import ROOT


def _no_enums(obj: Any) -> bool:
    if isinstance(obj, enum.Enum):
        return False
    if isinstance(obj, dict):
        return all(_no_enums(k) and _no_enums(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return all(_no_enums(x) for x in obj)
    return True


class Leaf:
    """Stands in for a tensor: plain() must pass it through, not copy it."""


def test_keys_and_values_become_plain_str() -> None:
    leaf = Leaf()
    state: dict[str, Any] = {
        ModuleKeys.MODULE: collections.OrderedDict([("w", leaf)]),
        ModuleKeys.DS_VERSION: "0.19.8",
        "nested": [{OptimizerKeys.ZERO_STAGE: OptimizerKeys.PARTITION_COUNT}, (OptimizerKeys.CLIP_GRAD, 1.0)],
    }
    out = plain(state)
    assert out == state
    assert _no_enums(out)
    assert all(type(k) is str for k in out)
    assert type(out["module"]) is collections.OrderedDict
    assert out["module"]["w"] is leaf
    assert type(out["nested"][0]["zero_stage"]) is str
    assert type(out["nested"][1]) is tuple and type(out["nested"][1][0]) is str


def test_containers_are_copies() -> None:
    inner = [OptimizerKeys.ZERO_STAGE]
    state = {"a": inner}
    out = plain(state)
    assert out is not state and out["a"] is not inner
    assert inner[0] is OptimizerKeys.ZERO_STAGE  # the input is not changed


def test_top_level_member_and_scalars() -> None:
    assert type(plain(OptimizerKeys.ZERO_STAGE)) is str
    for leaf in (1, 2.5, None, "s", b"b", Leaf):
        assert plain(leaf) is leaf


def test_other_str_enums_are_converted_too() -> None:
    class Mine(str, enum.Enum):
        A = "a"

    class Number(enum.IntEnum):
        ONE = 1

    state: dict[str, Any] = {Mine.A: [Mine.A], "n": Number.ONE}
    out = plain(state)
    assert type(next(iter(out))) is str and type(out["a"][0]) is str
    assert out["n"] is Number.ONE  # not a str enum: a leaf


class Point(NamedTuple):
    x: Any
    y: Any


def test_container_kinds_are_kept() -> None:
    dd: collections.defaultdict[str, list[Any]] = collections.defaultdict(list)
    dd[ModuleKeys.MODULE].append(ModuleKeys.MODULE)
    out = plain(
        {
            "dd": dd,
            "set": {OptimizerKeys.ZERO_STAGE},
            "frozen": frozenset({OptimizerKeys.ZERO_STAGE}),
            "point": Point(OptimizerKeys.ZERO_STAGE, 2),
        }
    )
    assert type(out["dd"]) is collections.defaultdict and out["dd"].default_factory is list
    assert type(out["dd"]["module"][0]) is str
    assert type(out["set"]) is set and all(type(x) is str for x in out["set"])
    assert type(out["frozen"]) is frozenset
    assert type(out["point"]) is Point and type(out["point"].x) is str


def test_unknown_container_subclasses_are_leaves() -> None:
    class MyDict(dict[str, Any]):
        pass

    class MyTuple(tuple[Any, ...]):  # like torch.Size
        pass

    d = MyDict(a=OptimizerKeys.ZERO_STAGE)
    t = MyTuple((1, 2))
    out = plain([d, t])
    assert out[0] is d and out[1] is t


def test_shared_containers_stay_shared() -> None:
    shared = [OptimizerKeys.ZERO_STAGE]
    out = plain({"a": shared, "b": shared})
    assert out["a"] is out["b"]


def test_cycle_is_a_clear_error() -> None:
    loop: list[Any] = [1]
    loop.append({"self": loop})
    with pytest.raises(ckptkeys.StructureError, match=r"contains itself at root\[1\]\['self'\]"):
        plain(loop)
    d: dict[str, Any] = {}
    d["d"] = d
    with pytest.raises(ValueError, match=r"root\['d'\]"):
        plain(d)


def test_very_deep_structure_gives_a_correct_result() -> None:
    depth = 200_000  # far past the recursion limit
    deep: Any = OptimizerKeys.ZERO_STAGE
    for _ in range(depth):
        deep = [deep]
    out = plain(deep)
    for _ in range(depth):
        assert type(out) is list and len(out) == 1
        out = out[0]
    assert type(out) is str and out == "zero_stage"


keys = st.sampled_from(list(ckptkeys.iter_members())) | st.text(max_size=5) | st.integers()
leaves = keys | st.floats(allow_nan=False) | st.none() | st.booleans()
structures = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=4)
        | st.builds(collections.OrderedDict, st.dictionaries(keys, children, max_size=4))
    ),
    max_leaves=30,
)


@given(structures)
def test_plain_is_equal_and_enum_free(structure: Any) -> None:
    out = plain(structure)
    assert out == structure
    assert _no_enums(out)
    assert plain(out) == out


def test_plain_result_unpickles_where_ckptkeys_cannot_be_imported() -> None:
    state = plain({ModuleKeys.DS_VERSION: OptimizerKeys.ZERO_STAGE, "l": [ModuleKeys.MODULE]})
    payload = pickle.dumps(state)
    assert b"ckptkeys" not in payload
    # A member itself does name ckptkeys: that is what plain() is for.
    assert b"ckptkeys" in pickle.dumps({ModuleKeys.DS_VERSION: 1})
    script = textwrap.dedent(
        """
        import pickle, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ckptkeys":
                    raise ImportError("ckptkeys is blocked in this process")
        sys.meta_path.insert(0, Block())
        try:
            import ckptkeys
        except ImportError:
            pass
        else:
            raise SystemExit("ckptkeys was importable")
        state = pickle.loads(sys.stdin.buffer.read())
        assert state == {"ds_version": "zero_stage", "l": ["module"]}, state
        assert all(type(k) is str for k in state)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], input=payload, capture_output=True, cwd=ROOT / "tests", check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() == b"ok"


def test_torch_weights_only_load_of_plain_state() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(4.0)
    state: dict[str, Any] = {
        ModuleKeys.MODULE: collections.OrderedDict([("w", tensor)]),
        ModuleKeys.DS_VERSION: "0.19.8",
        OptimizerKeys.PARTITION_COUNT: [OptimizerKeys.ZERO_STAGE],
    }
    out = plain(state)
    assert out[ModuleKeys.MODULE]["w"] is tensor  # tensors are not copied

    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert all(type(k) is str for k in loaded)
    assert type(loaded["partition_count"][0]) is str
    assert torch.equal(loaded["module"]["w"], tensor)

    # Without plain(), torch refuses the members.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buffer, weights_only=True)
