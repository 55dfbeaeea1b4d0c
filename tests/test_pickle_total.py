"""Where C pickle goes on, the machine goes on: every global after a step it cannot follow is seen.

Each pickle below does something the inert machine cannot evaluate but C pickle (torch.load)
carries out and reads on from (a BUILD on a rebuilt tensor, an APPEND to a global, a
persistent id the hook refuses, ...), then names ``os.system``. The file is refused, with a
CorruptCheckpointError naming the first such step, and ``os.system`` is among its globals.
Where C pickle itself stops (an APPEND to an int, a BUILD of a state dict on a list), the machine
stops too.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from ckptkeys import CorruptCheckpointError, ReadError
from ckptkeys._read._globalref import GlobalRef
from ckptkeys._read._pickle import PersistentRef, unpickle
from ckptkeys._read._torch import TORCH_INTERPRETERS

SYSTEM = GlobalRef("os", "system")
PAYLOAD = b"cos\nsystem\n(Vtouch /tmp/x\ntR"  # a call C pickle would make after the step
# A tensor the machine rebuilds itself (torch._utils._rebuild_meta_tensor_no_storage: dtype,
# size, stride, requires_grad).
META_TENSOR = b"ctorch._utils\n_rebuild_meta_tensor_no_storage\n(ctorch\nfloat32\n(K\x02t(K\x01t\x89tR"


def _refused_with_payload(body: bytes, match: str, **options: Any) -> CorruptCheckpointError:
    data = b"\x80\x02" + body + b"0" + PAYLOAD + b"."  # the step, POP, then the payload
    with pytest.raises(CorruptCheckpointError, match=match) as caught:
        unpickle(data, **options)
    assert SYSTEM in caught.value.globals
    return caught.value


def test_meta_tensor_is_rebuilt() -> None:
    # The cases below rely on it: a TensorInfo, not an Opaque record.
    value = unpickle(b"\x80\x02" + META_TENSOR + b".", interpreters=TORCH_INTERPRETERS).value
    assert type(value).__name__ == "TensorInfo"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # torch calls Tensor.__setstate__ (it can replace the tensor's data) and goes on.
        (META_TENSOR + b"}b", "BUILD on a tensor: torch calls Tensor.__setstate__"),
        (META_TENSOR + b"(K\x01K\x02tb", "BUILD on a tensor"),
        # A global is called: sys.path is a list, os.environ a mapping, any class may have add().
        (b"csys\npath\nVx\na", "APPEND to the global sys.path"),
        (b"csys\npath\n(Vx\ne", "APPEND to the global sys.path"),
        (b"cos\nenviron\nVK\nVV\ns", "SETITEM on the global os.environ"),
        (b"cos\nenviron\n(VK\nVV\nu", "SETITEM on the global os.environ"),
        (b"cbuiltins\nset\n(K\x01\x90", "ADDITEMS on the global builtins.set"),
        (b"cos\nenviron\n}b", "BUILD on the global os.environ"),
        (META_TENSOR + b"K\x01a", "APPEND to a TensorInfo"),
        (META_TENSOR + b"K\x00K\x01s", "SETITEM on a TensorInfo"),
        # A list index that is a record of a call (it may be an int): C may go on.
        (b"]K\x01acbuiltins\nint\n)RK\x05s", "SETITEM on a list"),
        # Names a call made: torch resolves a global no one can name without running it.
        (b"cbuiltins\nstr\n(Vos\ntRVsystem\n\x93", "STACK_GLOBAL with names the reader cannot evaluate"),
        # Arguments a call made (builtins.tuple returns a tuple): C calls the function with them.
        (b"cos\ngetcwd\ncbuiltins\ntuple\n)RR", "REDUCE: arguments are an object the reader cannot evaluate"),
        (b"cbuiltins\nbytes\n)R\x98", "READONLY_BUFFER on the result of builtins.bytes"),
        # An OrderedDict this reader made: special attributes are not set, but C sets them.
        (b"ccollections\nOrderedDict\n)R}V__class__\nK\x01sb", "special or non-string attributes"),
    ],
)
def test_read_on_where_c_pickle_goes_on(body: bytes, match: str) -> None:
    _refused_with_payload(body, match, interpreters=TORCH_INTERPRETERS)


def test_persistent_id_the_hook_refuses_is_read_on() -> None:
    def persistent_load(pid: Any) -> Any:
        raise CorruptCheckpointError("f.pt", f"persistent id {pid!r} is not a storage record")

    data = b"\x80\x02(VA\nVB\nQ" + PAYLOAD + b"t."
    with pytest.raises(CorruptCheckpointError, match="is not a storage record") as caught:
        unpickle(data, persistent_load=persistent_load)
    assert SYSTEM in caught.value.globals


def test_persistent_placeholder_keeps_the_id() -> None:
    seen: list[Any] = []

    def persistent_load(pid: Any) -> Any:
        seen.append(pid)
        raise CorruptCheckpointError("f.pt", "refused")

    with pytest.raises(CorruptCheckpointError):
        unpickle(b"\x80\x02VA\nQ]\x94h\x00a.", persistent_load=persistent_load)
    assert seen == ["A"]
    assert PersistentRef("A") == PersistentRef("A")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\x02K\x01K\x02a.", "APPEND to a int"),  # no append(): AttributeError in C
        (b"\x80\x02)K\x01K\x02s.", "SETITEM on a tuple"),
        (b"\x80\x02]K\x05K\x01s.", "SETITEM on a list"),  # IndexError in C
        (b"\x80\x02]}b.", "BUILD on a list"),  # a list has no __dict__
        (b"\x80\x02]NN\x86b.", "BUILD on a list"),  # (state, None): "slot state is not a dictionary"
        (b"\x80\x02ccollections\nOrderedDict\n)R]b.", "BUILD on a OrderedDict"),  # "state is not a dictionary"
        (b"\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL with non-string names"),
        (b"\x80\x02K\x01K\x02R.", "REDUCE: arguments are int"),  # "argument list must be a tuple"
    ],
)
def test_stop_where_c_pickle_stops(data: bytes, match: str) -> None:
    with pytest.raises(Exception) as c_error:  # noqa: PT011 - C pickle's own error types vary
        pickle.loads(data)
    assert not isinstance(c_error.value, ReadError)
    with pytest.raises(CorruptCheckpointError, match=match):
        unpickle(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02]N}\x86b.",  # BUILD (None, {}) on a list: nothing to set
        b"\x80\x02ccollections\nOrderedDict\n)R}V_metadata\nK\x01sb.",
    ],
)
def test_build_that_sets_nothing_or_metadata(data: bytes) -> None:
    ours = unpickle(data, interpreters=TORCH_INTERPRETERS).value
    theirs = pickle.loads(data)
    assert ours == theirs
    assert vars(ours) == vars(theirs) if hasattr(theirs, "__dict__") else True


def test_first_defect_is_reported_even_when_reading_stops_later() -> None:
    # BUILD on a tensor (read on), then the payload, then a truncation: the refusal names the
    # BUILD, and carries os.system.
    data = b"\x80\x02" + META_TENSOR + b"}b0" + PAYLOAD + b"K"
    with pytest.raises(CorruptCheckpointError, match="BUILD on a tensor") as caught:
        unpickle(data, interpreters=TORCH_INTERPRETERS)
    assert SYSTEM in caught.value.globals


def test_defect_on_a_deep_record_is_worded_without_repr() -> None:
    # REDUCE whose arguments are builtins.list(<50,000 nested lists>): the message names the
    # record; repr() of it would recurse past the interpreter's limit (RecursionError).
    nested = b"]" * 50_000 + b"a" * 49_999
    data = b"\x80\x02cos\nsystem\ncbuiltins\nlist\n(" + nested + b"tRR."
    with pytest.raises(CorruptCheckpointError, match=r"cannot evaluate \(the result of builtins.list\)") as caught:
        unpickle(data)
    assert SYSTEM in caught.value.globals
