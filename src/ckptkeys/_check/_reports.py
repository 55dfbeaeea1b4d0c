"""The reports validation returns: a file's, a tag's, a save folder's and a run's, each with its problems."""

from __future__ import annotations

from dataclasses import dataclass

from .._read._reader import Checkpoint
from .._read._repr import counted, one_line, severities
from ..naming import CheckpointName
from ._converters import Verdict
from ._layout import Layout, TagLayout
from ._problems import Problem
from ._runs import Run

__all__ = ["FileReport", "RunReport", "TagReport", "ValidationReport"]


@dataclass(frozen=True, slots=True, repr=False)
class TagReport:
    """A validated tag: its layout, its problems (scan's included) and the converters' verdicts.

    Its repr is one line (folder, files, problems by severity, converters ready); the problems
    are :attr:`problems` (``print(*report.problems, sep="\\n")``), the verdicts :attr:`converters`.
    """

    layout: TagLayout
    problems: tuple[Problem, ...]
    converters: dict[str, Verdict]

    def __repr__(self) -> str:
        ready = [name for name, verdict in self.converters.items() if verdict.ready]
        facts = [counted(len(self.layout.files), "file"), severities(p.severity for p in self.problems)]
        if self.converters:
            facts.append(f"ready for {' and '.join(ready)}" if ready else "no converter ready")
        return one_line(self, self.layout.path, facts)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem of the report (here :attr:`problems`), as every report has them."""
        return self.problems


@dataclass(frozen=True, slots=True, repr=False)
class ValidationReport:
    """A validated save folder (or tag folder): one report per tag, and the folder's own problems.

    Its repr is one line (folder, tags, problems by severity); every problem is :attr:`all_problems`,
    each tag's report in :attr:`tags`.
    """

    layout: Layout
    tags: tuple[TagReport, ...]
    problems: tuple[Problem, ...]

    def __repr__(self) -> str:
        facts = (counted(len(self.tags), "tag"), severities(p.severity for p in self.all_problems))
        return one_line(self, self.layout.path, facts)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """The folder's problems, then each tag's."""
        return self.problems + tuple(p for tag in self.tags for p in tag.problems)


@dataclass(frozen=True, slots=True, repr=False)
class FileReport:
    """One validated checkpoint file.

    Its repr is one line (file, kind, problems by severity); the problems are :attr:`problems`,
    the file as read :attr:`checkpoint`.
    """

    path: str
    name: CheckpointName | None
    """What the file's name says (``None`` for a name DeepSpeed does not write)."""
    checkpoint: Checkpoint
    problems: tuple[Problem, ...]

    def __repr__(self) -> str:
        kind = "not a DeepSpeed file name" if self.name is None else self.name.kind.value.replace("_", " ")
        return one_line(self, self.path, (kind, severities(p.severity for p in self.problems)))

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem of the report (here :attr:`problems`), as every report has them."""
        return self.problems


@dataclass(frozen=True, slots=True, repr=False)
class RunReport:
    """A validated run: its saves, newest first, and a report for each save that was validated.

    Its repr is one line (folder, saves validated, problems by severity); every problem is
    :attr:`all_problems`, each save's report in :attr:`saves`.
    """

    run: Run
    saves: tuple[ValidationReport, ...]
    """The newest save only, unless every save or one named save was asked for."""

    def __repr__(self) -> str:
        facts = (f"{len(self.saves)} of {counted(len(self.run.saves), 'save')} validated",)
        return one_line(self, self.run.path, (*facts, severities(p.severity for p in self.all_problems)))

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """The run folder's problems, then each validated save's (:attr:`ValidationReport.all_problems`)."""
        return self.run.problems + tuple(p for save in self.saves for p in save.all_problems)
