"""``plain()``: strip enum members out of a structure before it is saved.

A pickled enum member names its class, so a checkpoint holding one cannot be loaded without
ckptkeys, and ``torch.load(weights_only=True)`` refuses it outright (torch allows no
``builtins.str`` reducer either). ``plain`` copies the containers of a structure and replaces
every ``str``-valued enum member, as a key or a value, by its plain ``str``.
"""

from __future__ import annotations

import collections
import enum

from .._errors import StructureError

TYPE_CHECKING = False  # typing costs milliseconds to import; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, Final, TypeVar

    _T = TypeVar("_T")

__all__ = ["plain"]

# Containers whose exact type plain() knows how to rebuild. Subclasses it does not know
# (a torch.Size, a user's Mapping) are leaves: they are returned as they are, not copied.
_BUILDERS: Final[dict[type, Callable[[Any, list[Any]], Any]]] = {
    dict: lambda src, items: dict(zip(items[::2], items[1::2], strict=True)),
    collections.OrderedDict: lambda src, items: collections.OrderedDict(zip(items[::2], items[1::2], strict=True)),
    collections.defaultdict: lambda src, items: collections.defaultdict(
        src.default_factory, zip(items[::2], items[1::2], strict=True)
    ),
    list: lambda src, items: items,
    tuple: lambda src, items: tuple(items),
    set: lambda src, items: set(items),
    frozenset: lambda src, items: frozenset(items),
}


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield value
    else:
        yield from obj


def _builder(obj: Any) -> Callable[[Any, list[Any]], Any] | None:
    builder = _BUILDERS.get(type(obj))
    if builder is None and isinstance(obj, tuple) and hasattr(type(obj), "_make"):
        return lambda src, items: type(src)._make(items)  # a namedtuple
    return builder


class _Frame:
    __slots__ = ("build", "children", "items", "source")

    def __init__(self, source: Any, build: Callable[[Any, list[Any]], Any]) -> None:
        self.source = source
        self.build = build
        self.children = _children(source)
        self.items: list[Any] = []

    def position(self) -> str:
        """Where in ``source`` the child being converted sits, as a subscript."""
        if isinstance(self.source, dict):
            if len(self.items) % 2 == 0:
                return "<key>"
            return f"[{self.items[-1]!r}]"
        if isinstance(self.source, (set, frozenset)):
            return "{...}"
        return f"[{len(self.items)}]"


def plain(obj: _T) -> _T:
    """Return a copy of ``obj`` with every ``str`` enum member replaced by its plain ``str`` value.

    ``dict``, ``OrderedDict``, ``defaultdict``, ``list``, ``tuple``, named tuples, ``set``
    and ``frozenset`` are copied (keys and values alike); every other object, a tensor for
    instance, is kept as it is, not copied. A container reached twice is copied once and
    shared in the result, as in the input. Nesting depth is not limited by Python's
    recursion limit. A container that contains itself raises
    :class:`~ckptkeys.StructureError` naming the path of the cycle.
    """
    memo: dict[int, Any] = {}
    on_path: set[int] = set()
    stack: list[_Frame] = []
    result: list[Any] = []

    def deliver(value: Any) -> None:
        (stack[-1].items if stack else result).append(value)

    def visit(value: Any) -> None:
        if isinstance(value, enum.Enum) and isinstance(value, str):
            deliver(str.__str__(value))
            return
        build = _builder(value)
        if build is None:
            deliver(value)
            return
        key = id(value)
        if key in memo:
            deliver(memo[key])
        elif key in on_path:
            path = "".join(frame.position() for frame in stack)
            raise StructureError(f"plain(): the structure contains itself at root{path}")
        else:
            on_path.add(key)
            stack.append(_Frame(value, build))

    visit(obj)
    while stack:
        frame = stack[-1]
        child = next(frame.children, _END)
        if child is not _END:
            visit(child)
            continue
        stack.pop()
        on_path.discard(id(frame.source))
        built = frame.build(frame.source, frame.items)
        memo[id(frame.source)] = built
        deliver(built)
    return result[0]  # type: ignore[no-any-return]


_END: Final = object()
