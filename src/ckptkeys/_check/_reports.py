"""The reports validation returns: a file's, a tag's, a save folder's and a run's, each with its problems."""

from __future__ import annotations

from dataclasses import dataclass

from .._read._reader import Checkpoint
from ..naming import CheckpointName
from ._converters import Verdict
from ._layout import Layout, TagLayout
from ._problems import Problem
from ._runs import Run

__all__ = ["FileReport", "RunReport", "TagReport", "ValidationReport"]


@dataclass(frozen=True, slots=True)
class TagReport:
    """A validated tag: its layout, its problems (scan's included) and the converters' verdicts."""

    layout: TagLayout
    problems: tuple[Problem, ...]
    converters: dict[str, Verdict]

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return self.problems


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """A validated save folder (or tag folder): one report per tag, and the folder's own problems."""

    layout: Layout
    tags: tuple[TagReport, ...]
    problems: tuple[Problem, ...]

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return self.problems + tuple(p for tag in self.tags for p in tag.problems)


@dataclass(frozen=True, slots=True)
class FileReport:
    """One validated checkpoint file."""

    path: str
    name: CheckpointName | None
    """What the file's name says (``None`` for a name DeepSpeed does not write)."""
    checkpoint: Checkpoint
    problems: tuple[Problem, ...]

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return self.problems


@dataclass(frozen=True, slots=True)
class RunReport:
    """A validated run: its saves, newest first, and a report for each save that was validated."""

    run: Run
    saves: tuple[ValidationReport, ...]
    """The newest save only, unless every save or one named save was asked for."""

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return self.run.problems + tuple(p for save in self.saves for p in save.all_problems)
