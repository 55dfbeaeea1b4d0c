"""Which problems a user sees and which fail: ``--select``, ``--ignore``, ``--fail-on``, ``--require``.

:class:`Selection` is what ``ckptkeys validate`` and ``inspect`` apply to a report (their options
and ``[tool.ckptkeys.validate]``), and what a Python user applies to ``validate()``'s problems.

A selector is a code (``missing-rank``), a prefix of whole hyphen-separated words
(``missing`` or ``missing-``: every ``missing-*`` code; ``miss`` is no selector), or a group
(``security``, ``converters``: :data:`GROUPS`). Codes are kebab-case words, so a prefix that
ends inside a word would pick codes by accident (``un`` would take ``unknown-key``,
``unreadable-file`` and ``unsupported-format``): it ends at a hyphen or at the code's end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ._codes import CODES, GROUPS
from ._converters import CONVERTERS, NOT_READY
from ._problems import Problem, Severity
from ._reports import FileReport, RunReport, TagReport, ValidationReport

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final, TypeVar

    from ._safetensors_files import SafetensorsReport
    from ._weights_folders import WeightsFolderReport

    AnyReport = TypeVar(
        "AnyReport",
        bound="FileReport | TagReport | ValidationReport | RunReport | SafetensorsReport | WeightsFolderReport",
    )

__all__ = ["FAIL_ON", "FailOn", "Selection", "describe_codes", "matches", "unknown_converters", "unknown_selectors"]

FailOn = Literal["error", "warning", "info", "never"]
Converter = Literal["zero_to_fp32", "ds_to_universal"]
"""The converters ``require`` names (:data:`ckptkeys._check._converters.CONVERTERS`; a test holds them equal)."""
FAIL_ON: Final[tuple[FailOn, ...]] = ("error", "warning", "info", "never")
# The severities each --fail-on value fails on.
_FAILING: Final[dict[str, frozenset[Severity]]] = {
    "error": frozenset({Severity.ERROR}),
    "warning": frozenset({Severity.ERROR, Severity.WARNING}),
    "info": frozenset(Severity),
    "never": frozenset(),
}


def matches(selector: str, code: str) -> bool:
    """Whether ``selector`` (a code, a prefix of whole words, a group) picks ``code``."""
    group = GROUPS.get(selector)
    if group is not None:
        return code in group
    if not code.startswith(selector) or not selector:
        return False
    return len(code) == len(selector) or selector.endswith("-") or code[len(selector)] == "-"


def unknown_selectors(selectors: Iterable[str]) -> list[str]:
    """The selectors that pick no code: a misspelt code, a prefix ending inside a word."""
    return [s for s in selectors if not any(matches(s, code) for code in CODES)]


def unknown_converters(names: Iterable[str]) -> list[str]:
    """The names that are not converters (:data:`ckptkeys._check._converters.CONVERTERS`)."""
    return [name for name in names if name not in CONVERTERS]


def _strings(field: str, value: Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a str is an iterable of one-letter selectors: surely a mistake
        raise TypeError(f"Selection({field}=...) takes a list of strings, not one string: [{value!r}]")
    values = tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"Selection({field}=...) takes strings")
    return values


@dataclass(frozen=True, slots=True)
class Selection:
    """Which problems are shown, which count for failing, and which converters must be ready.

    ``select``: only problems whose code one of these selectors picks (``None``: every problem);
    ``ignore``: not those; ``fail_on``: the lowest severity that fails (``"error"``: errors only,
    ``"never"``: nothing fails); ``require``: converters (``"zero_to_fp32"``,
    ``"ds_to_universal"``) whose not-ready problem becomes an ``error``. A selector is a code,
    a prefix of whole hyphen-separated words (``"missing"``, ``"missing-"``) or a group
    (``"security"``, ``"converters"``); an unknown one is a ``ValueError`` listing the codes.
    ``ignore`` wins over ``select``. The same rules as ``ckptkeys validate --select ...``::

        selection = Selection(ignore=["missing-"], require=["ds_to_universal"])
        shown = selection.apply(ckptkeys.validate(path))
        failed = selection.fails(shown)
    """

    select: Sequence[str] | None = None
    """Stored as a tuple, as ``ignore`` and ``require`` are."""
    ignore: Sequence[str] = ()
    fail_on: FailOn = "error"
    require: Sequence[Converter] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "select", _strings("select", self.select))
        object.__setattr__(self, "ignore", _strings("ignore", self.ignore) or ())
        object.__setattr__(self, "require", _strings("require", self.require) or ())
        if self.select is not None and not self.select:  # as --select '' and select = []: nothing to show
            raise ValueError(f"select lists no code (None selects every problem); {describe_codes()}")
        unknown = unknown_selectors((*(self.select or ()), *self.ignore))
        if unknown:
            raise ValueError(f"unknown code or prefix {unknown[0]!r}; {describe_codes()}")
        if self.fail_on not in FAIL_ON:
            raise ValueError(f"fail_on is {self.fail_on!r}; it is one of {', '.join(FAIL_ON)}")
        converters = unknown_converters(self.require)
        if converters:
            raise ValueError(f"unknown converter {converters[0]!r}; the converters are {', '.join(CONVERTERS)}")

    def apply(self, problems: Iterable[Problem]) -> tuple[Problem, ...]:
        """The problems shown, in their order: a required converter's not-ready problem as an error."""
        required = {NOT_READY[name] for name in self.require}
        shown = []
        for problem in problems:
            if problem.code in required and problem.severity is not Severity.ERROR:
                problem = dataclasses.replace(problem, severity=Severity.ERROR)
            if self.select is not None and not any(matches(s, problem.code) for s in self.select):
                continue
            if any(matches(s, problem.code) for s in self.ignore):
                continue
            shown.append(problem)
        return tuple(shown)

    def fails(self, problems: Iterable[Problem]) -> bool:
        """Whether any problem this selection shows has a severity ``fail_on`` fails on."""
        failing = _FAILING[self.fail_on]
        return any(problem.severity in failing for problem in self.apply(problems))

    def report(self, report: AnyReport) -> AnyReport:
        """``report`` with only the problems this selection shows (a run's own and each save's)."""
        if isinstance(report, RunReport):
            run = dataclasses.replace(report.run, problems=self.apply(report.run.problems))
            return dataclasses.replace(report, run=run, saves=tuple(self.report(save) for save in report.saves))
        if isinstance(report, ValidationReport):
            tags = tuple(self.report(tag) for tag in report.tags)
            return dataclasses.replace(report, tags=tags, problems=self.apply(report.problems))
        return dataclasses.replace(report, problems=self.apply(report.problems))

    def __repr__(self) -> str:
        """One line of at most 200 characters: the fields that differ from the defaults, each shortened."""
        from .._read._repr import call

        fields = dataclasses.fields(self)
        return call(self, ((f.name, getattr(self, f.name)) for f in fields if getattr(self, f.name) != f.default))


def describe_codes() -> str:
    """The codes, groups and prefix rule, as a usage error lists them."""
    return (
        f"the codes are {', '.join(CODES)}; the groups {', '.join(GROUPS)}; a prefix is whole words (missing, missing-)"
    )
