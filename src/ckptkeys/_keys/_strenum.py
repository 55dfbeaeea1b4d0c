"""The base class of every key group: a ``StrEnum`` that behaves the same on 3.10-3.13.

Python 3.11 added :class:`enum.StrEnum`; 3.10 gets a backport with the same ``str``,
``format`` and hashing behaviour. On top of it, :class:`KeyGroup` adds

* per-member documentation (``description``, ``since``, ``deepspeed_name``), the way
  :class:`http.HTTPStatus` carries ``phrase`` and ``description``;
* ``"value" in Group`` that answers ``True``/``False`` for any object on every version
  (3.10 and 3.11 raise ``TypeError`` for non-members, 3.12 changed the rules);
* a look-up error that names the group and the closest known values.
"""

from __future__ import annotations

import enum
import sys

from .._errors import UnknownKeyError

TYPE_CHECKING = False  # typing costs milliseconds to import; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

    from typing_extensions import Self

__all__ = ["KeyGroup", "StrEnum"]

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised by the 3.10 CI job

    class StrEnum(str, enum.Enum):
        """Backport of Python 3.11's :class:`enum.StrEnum`."""

        def __new__(cls, *values: str) -> Self:
            if len(values) > 3:
                raise TypeError(f"too many arguments for str(): {values!r}")
            if len(values) >= 1 and not isinstance(values[0], str):
                raise TypeError(f"{values[0]!r} is not a string")
            if len(values) >= 2 and not isinstance(values[1], str):
                raise TypeError(f"encoding must be a string, not {values[1]!r}")
            if len(values) == 3 and not isinstance(values[2], str):
                raise TypeError(f"errors must be a string, not {values[2]!r}")
            value = str(*values)
            member = str.__new__(cls, value)
            member._value_ = value
            return member

        __str__ = str.__str__
        __format__ = str.__format__  # type: ignore[assignment]

        if TYPE_CHECKING:  # as typeshed declares 3.11's StrEnum (Enum's own is Any)
            _value_: str

            @property
            def value(self) -> str: ...

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
            return name.lower()


# How many near values an unknown-key error suggests.
_SUGGESTIONS = 3


class _KeyGroupMeta(enum.EnumMeta):
    """Metaclass: version-independent, never-raising membership tests."""

    def __new__(metacls, name: str, bases: tuple[type, ...], namespace: Any, **kwargs: Any) -> Any:
        group = super().__new__(metacls, name, bases, namespace, **kwargs)
        # Each member gets its own docstring, for inspect.getdoc(member), IPython's `member?` and
        # the member list of help(Group). help(member) cannot show it: pydoc takes any str
        # argument for the name of a topic, module or builtin to look up (docs/registry.md).
        # Set here, not in KeyGroup.__new__, because a member learns its name only afterwards.
        members: list[KeyGroup] = list(group.__members__.values())
        for member in members:
            member.__doc__ = _member_doc(member)
        return group

    def __contains__(cls, value: object) -> bool:
        # Members are str and sit in the value map under their own value.
        return isinstance(value, str) and value in cls._value2member_map_


def _member_doc(member: KeyGroup) -> str:
    """A member's ``__doc__``: its description, then its value, DeepSpeed constant and first release."""
    facts = f"Value {member._value_!r}"
    if member.deepspeed_name is not None:
        facts += f" (deepspeed.checkpoint.constants.{member.deepspeed_name})"
    if member.since is not None:
        facts += f", since DeepSpeed {member.since}"
    return f"{member.description}\n\n{facts}."


class KeyGroup(StrEnum, metaclass=_KeyGroupMeta):
    """A group of DeepSpeed checkpoint keys that belong to one kind of dict or one naming role.

    Members are ``str``: they compare and hash equal to their values, so they index dicts
    loaded from disk, and ``str(m)``, ``format(m)`` and f-strings give the plain value.
    """

    _value_: str
    description: str
    """One line: what the key holds, and in which file or dict."""
    since: str | None
    """The DeepSpeed release that first wrote or read this key, where known (``"0.7.4"``)."""
    _is_constant: bool

    if TYPE_CHECKING:
        # Members are defined by tuples (value, description, since, constant) that __new__
        # unpacks, but mypy takes `.value` from the assignment (the tuple) when __new__ is
        # hidden, and gives Any when it is not. At run time `.value` is the plain str.
        @property
        def value(self) -> str: ...

    else:  # hidden from type checkers, so that Group("value") type-checks

        def __new__(cls, value, description, since=None, constant=False):
            member = str.__new__(cls, value)
            member._value_ = value
            member.description = description
            member.since = since
            member._is_constant = constant
            return member

    @property
    def deepspeed_name(self) -> str | None:
        """The ``deepspeed.checkpoint.constants`` name this member stands for, if any.

        Each DeepSpeed constant has exactly one such member, named like the constant.
        """
        return self._name_ if self._is_constant else None

    @property
    def group(self) -> type[KeyGroup]:
        """The key group this member belongs to."""
        return type(self)

    @classmethod
    def _missing_(cls, value: object) -> KeyGroup:
        group = cls.__name__
        if not isinstance(value, str):
            raise UnknownKeyError(f"{group} values are strings; got {value!r} of type {type(value).__name__}")
        import difflib  # only on this error path: it costs a millisecond to import

        values = [m._value_ for m in cls]
        close = difflib.get_close_matches(value, values, n=_SUGGESTIONS, cutoff=0.6)
        by_name = [m._value_ for m in cls if m.name == value or m.name == value.upper()]
        hints = list(dict.fromkeys(by_name + close))
        hint = f"; closest: {', '.join(repr(v) for v in hints)}" if hints else ""
        raise UnknownKeyError(f"{value!r} is not a value of {group}{hint}")
