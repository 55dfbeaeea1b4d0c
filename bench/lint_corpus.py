"""The labelled evaluation corpus of ``ckptkeys lint``: its candidates and the scoring.

``tests/data/lint_corpus/`` holds small excerpts of public projects (``*.py.txt``, each with
its origin in the first lines and in ``labels.json``): code that handles DeepSpeed checkpoints
and code that only looks alike. A *candidate* is, independently of what the linter reports:

- a string literal (not a docstring, not a piece of an f-string or of a ``+``/``%``/
  ``.format`` string) whose value is a registry value, or holds no whitespace and one of
  the file-name pieces :data:`PIECES`;
- a string built from parts (f-string, ``+``, ``%``, ``.format``; the outermost) whose literal
  text holds no whitespace and one of :data:`PIECES` or ends in ``.pt``;
- an import from ``deepspeed.checkpoint`` or one of its modules.

``labels.json`` gives every candidate of every file a label: ``true`` where the literal is the
DeepSpeed checkpoint key, file-name piece or tag piece (or the import is of DeepSpeed's key
constants) that a ckptkeys member or builder should replace, ``false`` where it is not (a log
dict, a config dict, another checkpoint format, a plain word), each with a note of the reason.
A candidate is ``(line, value)``, ``value`` ``None`` for built strings and imports; a finding
is scored by its own ``(line, value)``. A finding on an unlabelled spot counts as wrong.

Six parts, by project: ``dev`` (the rules were developed on it), ``heldout`` (labelled and
committed before the rules were changed), ``fresh``, ``fresh2``, ``fresh3`` and ``fresh4`` (each
labelled and committed after the rules were written, before the linter was first run on it;
``fresh2`` after issue 21, ``fresh3`` and ``fresh4`` in issue 22, ``fresh4`` for the project mode,
with modules that use another quoted module's helpers or key constants). The older parts hold
one excerpt per file, named after its project (``fresh2/xtuner_fileio.py.txt``); ``fresh3`` and
``fresh4`` keep whole-project folders, ``fresh3/<project>/<path inside the repository>.py.txt``,
so that one quoted module's import of another resolves as it does in the repository.
:func:`project_of` tells the project of a corpus file either way. docs/lint.md has the figures.

Two scorings: :func:`score_corpus` lints each file alone (``lint_source``, as ``ckptkeys lint``
has always run); :func:`score_projects` hands a linting function one project at a time (every
file of a project folder, by its path inside the project; a file of the older parts is a
project of its own), the shape of a project mode that weighs evidence across modules. Both
score a finding on the file it names.
"""

from __future__ import annotations

import ast
import collections
import json
import pathlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ckptkeys._keys import _registry
from ckptkeys.lint import Finding, lint_source

CORPUS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "lint_corpus"
PIECES = (
    "mp_rank_",
    "zero_pp_rank_",
    "expp_rank_",
    "optim_states",
    "model_states",
    "global_step",
    "latest",
    "zero_to_fp32",
)
SPLITS = ("dev", "heldout", "fresh", "fresh2", "fresh3", "fresh4")
HELD_OUT = ("heldout", "fresh", "fresh2", "fresh3", "fresh4")  # the parts kept out of development
# The parts no rule was tuned on: each labelled and committed before the linter first ran on it,
# and its misses never used to change a rule (issue 22's measure: code it was never tuned on).
# ``heldout`` and ``fresh`` were kept out of development too, but rules were changed after
# reading their misses.
UNTUNED = ("fresh2", "fresh3", "fresh4")
VALUES = frozenset(member.value for group in _registry.GROUPS for member in group)

Spot = tuple[int, "str | None"]


def _built(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return any(isinstance(n, (ast.Constant, ast.JoinedStr)) and _is_text(n) for n in (node.left, node.right))
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
    )


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _literal_text(node: ast.AST) -> str:
    return "".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n is not node
    ) + (node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "")


def candidates(source: str) -> list[Spot]:
    """Every candidate of one file, as ``(line, value)``, in order."""
    tree = ast.parse(source)
    inside: set[int] = set()  # literal parts of built strings, and docstrings
    found: list[Spot] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                inside.add(id(first.value))
        if _built(node) and id(node) not in inside:
            parts = [n for n in ast.walk(node) if n is not node and (_built(n) or _is_text(n))]
            # the literal pieces directly in this string (not inside a placeholder's expression)
            direct: list[ast.AST] = []
            stack: list[ast.AST] = [node]
            while stack:
                item = stack.pop()
                if isinstance(item, ast.JoinedStr):
                    direct += [v for v in item.values if isinstance(v, ast.Constant)]
                elif isinstance(item, ast.BinOp):
                    stack += [item.left, item.right]
                elif isinstance(item, ast.Call) and _built(item):
                    direct.append(item.func.value)  # type: ignore[attr-defined]
                elif isinstance(item, ast.Constant) and isinstance(item.value, str):
                    direct.append(item)
            text = "".join(n.value for n in direct if isinstance(n, ast.Constant) and isinstance(n.value, str))
            for part in parts:
                if part in direct or _built(part):
                    inside.add(id(part))
            if not any(c.isspace() for c in text) and (any(p in text for p in PIECES) or text.endswith(".pt")):
                found.append((node.lineno, None))  # type: ignore[attr-defined]
        elif (
            isinstance(node, ast.ImportFrom)
            and not node.level
            and (node.module or "").startswith("deepspeed.checkpoint")
        ) or (isinstance(node, ast.Import) and any(a.name.startswith("deepspeed.checkpoint") for a in node.names)):
            found.append((node.lineno, None))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is str and id(node) not in inside:
            value = node.value
            if value in VALUES or (not any(c.isspace() for c in value) and any(p in value for p in PIECES)):
                found.append((node.lineno, value))
    return sorted(found, key=lambda spot: (spot[0], spot[1] or ""))


@dataclass
class Score:
    reported: int = 0
    right: int = 0
    positives: int = 0
    found: int = 0

    @property
    def precision(self) -> float:
        return self.right / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.positives if self.positives else 1.0

    def add(self, other: Score) -> None:
        self.reported += other.reported
        self.right += other.right
        self.positives += other.positives
        self.found += other.found


def labels() -> dict[str, dict[str, object]]:
    document: dict[str, dict[str, object]] = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8"))["files"]
    return document


def label_spots(entry: dict[str, object]) -> dict[Spot, bool]:
    spots: dict[Spot, bool] = {}
    for line, value, right, _note in entry["labels"]:  # type: ignore[attr-defined]
        spots[(line, value)] = right
    return spots


@dataclass
class Miss:
    path: str
    line: int
    value: str | None
    note: str


def score_file(name: str, entry: dict[str, object]) -> tuple[Score, list[Miss], list[Miss]]:
    """The score of one corpus file, linted alone; its misses and its wrong reports."""
    source = (CORPUS / name).read_text(encoding="utf-8")
    return score_findings(name, entry, lint_source(source, name))


def score_findings(
    name: str, entry: dict[str, object], reported: Iterable[Finding]
) -> tuple[Score, list[Miss], list[Miss]]:
    """The score of the findings ``reported`` on one corpus file; its misses and its wrong reports."""
    spots = label_spots(entry)
    notes = {(line, value): note for line, value, _right, note in entry["labels"]}  # type: ignore[attr-defined]
    findings = collections.Counter((f.line, f.value) for f in reported if f.code != "CK001")
    score = Score()
    wrong: list[Miss] = []
    for spot, count in findings.items():
        score.reported += count
        if spots.get(spot):
            score.right += 1
            score.reported -= count - 1  # one spot, one report (a spot reported twice counts once)
        else:
            wrong.append(Miss(name, spot[0], spot[1], notes.get(spot, "unlabelled")))
    misses: list[Miss] = []
    for spot, right in spots.items():
        if right:
            score.positives += 1
            if spot in findings:
                score.found += 1
            else:
                misses.append(Miss(name, spot[0], spot[1], notes[spot]))
    return score, misses, wrong


def score_corpus(split: str | None = None) -> tuple[Score, list[Miss], list[Miss]]:
    total = Score()
    misses: list[Miss] = []
    wrong: list[Miss] = []
    for name, entry in sorted(labels().items()):
        if split is not None and entry["split"] != split:
            continue
        score, missed, bad = score_file(name, entry)
        total.add(score)
        misses += missed
        wrong += bad
    return total, misses, wrong


LintProject = Callable[[Mapping[str, str]], Iterable[Finding]]
"""A linting function over one project: its sources by path inside the project (``.py`` names,
``/``-separated) to its findings, each ``Finding.path`` one of those paths. A project mode
(``ckptkeys.lint.lint_project(sources)``) has this shape; :func:`lint_each` is today's linting in it."""


def lint_whole(sources: Mapping[str, str]) -> list[Finding]:
    """A project's files linted together (``lint_project``), as ``ckptkeys lint`` runs them."""
    from ckptkeys.lint import lint_project

    return lint_project(sources)


def lint_each(sources: Mapping[str, str]) -> list[Finding]:
    """Each file of a project linted alone (``lint_source``), as ``ckptkeys lint`` runs today."""
    return [finding for path, text in sources.items() for finding in lint_source(text, path)]


def project_of(name: str) -> tuple[str, str]:
    """The project of a corpus file, and the file's path inside it as a ``.py`` name.

    A file in a folder of a part is in that folder's project
    (``fresh3/savanna/tools/7b/common.py.txt`` -> ``("fresh3/savanna", "tools/7b/common.py")``);
    a file directly in a part, as in the older parts, is a project of its own
    (``fresh2/xtuner_fileio.py.txt`` -> ``("fresh2/xtuner_fileio.py.txt", "xtuner_fileio.py")``).
    """
    part, _, rest = name.partition("/")
    inner = rest.removesuffix(".txt")
    folder, slash, below = inner.partition("/")
    if slash:
        return f"{part}/{folder}", below
    return name, inner


def projects(split: str | None = None) -> dict[str, dict[str, str]]:
    """The corpus files of a part (of every part: ``None``) by project: for each project, its
    files by their path inside it, to their corpus names."""
    grouped: dict[str, dict[str, str]] = {}
    for name, entry in sorted(labels().items()):
        if split is None or entry["split"] == split:
            project, inner = project_of(name)
            grouped.setdefault(project, {})[inner] = name
    return grouped


def score_projects(split: str | None = None, lint: LintProject = lint_each) -> tuple[Score, list[Miss], list[Miss]]:
    """:func:`score_corpus`, with ``lint`` given one whole project at a time (its files by their
    path inside it); each finding is scored on the file it names."""
    entries = labels()
    total = Score()
    misses: list[Miss] = []
    wrong: list[Miss] = []
    for project, files in projects(split).items():
        sources = {inner: (CORPUS / name).read_text(encoding="utf-8") for inner, name in files.items()}
        found: dict[str, list[Finding]] = {inner: [] for inner in files}
        for finding in lint(sources):
            if finding.path not in found:
                raise ValueError(f"{project}: a finding on {finding.path!r}, which is none of the project's files")
            found[finding.path].append(finding)
        for inner, name in files.items():
            score, missed, bad = score_findings(name, entries[name], found[inner])
            total.add(score)
            misses += missed
            wrong += bad
    return total, misses, wrong
