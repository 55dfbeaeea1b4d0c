"""Whether a tag may be exported: the problems ``validate`` reports for it, and which of them refuse.

Export runs validation's own check (``_check._validate.check_tag``, completeness included) on
the tag it exports, so it refuses exactly what ``ckptkeys validate`` reports as an ERROR for
that tag, plus the save folder's errors about that tag, whether or not the planner would read
the file concerned: a missing file it does not read still means a save that did not finish.

With ``weights="module"`` (the module's weights as saved, not the fp32 masters) the errors
about the optimizer state alone do not refuse: those whose file is an optimizer-state file
(``*_optim_states.pt``, ``expp_rank_*_optim_states.pt``, ``zero/optimizer_state.pt``,
``zero/<name>/<state>.pt`` other than ``fp32.pt``), and those of :data:`OPTIMIZER_CODES`;
never a security problem (:data:`SECURITY_CODES`), whichever file it is in: a save holding a
hostile file is not exported, even from files that are not.
"""

from __future__ import annotations

import os

from .._check._codes import GROUPS
from .._check._layout import TagLayout
from .._check._problems import Problem, Severity
from .._check._validate import check_tag
from ..naming import FileKind, parse
from ._types import ExportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Final

__all__ = ["OPTIMIZER_CODES", "SECURITY_CODES", "refusal", "refuse_incomplete"]

OPTIMIZER_CODES: Final = frozenset(
    {
        "missing-optimizer-shards",  # no *_optim_states.pt at all (the folder, or each shard it implies)
        "missing-rank",  # an optimizer shard of a rank
        "missing-expert-optim",  # an expp_rank_*_optim_states.pt
        "missing-universal-state",  # zero/optimizer_state.pt
        "partition-count-mismatch",  # the shards' partition_count against the shards present
        "param-shapes-mismatch",  # param_shapes against the fp32 partitions of the shards
        "stage-mismatch",  # the shards' zero_stage, against each other or ds_config
        "precision-mismatch",  # the shards' bf16_ prefix against ds_config
    }
)
"""Error codes about the optimizer state alone, which ``weights="module"`` exports despite."""

SECURITY_CODES: Final = frozenset({"code-execution", "torchscript-archive", "ambiguous-file"})
"""Error codes that refuse whatever the weights: what loading the file with torch would run, or
a file readers disagree on (docs/security.md)."""

_INCOMPLETE_CODES: Final = frozenset(
    {"missing-key", "wrong-type", "unreadable-file", "truncated-file", "latest-missing-tag", "unreadable-index"}
)
"""Error codes (beside ``missing-*``) of a file missing, cut short or unreadable, or a key it must hold."""

# What each class of refusal says, after the problem: true of the class, not of every refusal.
_REFUSALS: Final = {
    "security": "the checkpoint names code that torch.load would run (docs/security.md)",
    "ambiguous": "a file of the checkpoint is read differently by different readers, or by none (docs/security.md)",
    "incomplete": "the checkpoint is incomplete or damaged",
    "inconsistent": "the checkpoint's files disagree with each other",
}

_OPTIMIZER_KINDS: Final = (FileKind.OPTIM_STATES, FileKind.EXPERT_OPTIM_STATES, FileKind.UNIVERSAL_OPTIMIZER_STATE)


def refuse_incomplete(
    tag: TagLayout, folder_problems: Sequence[Problem], weights: str, *, verb: str = "exported"
) -> None:
    """Raise :class:`ExportError` naming the first ERROR ``validate`` reports for ``tag`` (and
    ``folder_problems``, the save folder's problems about it), a security one before the others,
    what is true of its class (:func:`refusal`) and how many more there are: ``(not exported:
    the checkpoint is incomplete or damaged)``, with ``verb`` for what was refused (``converted``)."""
    report = check_tag(tag)
    errors = [
        p
        for p in (*folder_problems, *report.problems)
        if p.severity == Severity.ERROR and not (weights == "module" and _optimizer_only(p))
    ]
    if not errors:
        return
    # A security problem first: what torch.load would run matters more than what it would lack.
    first = min(errors, key=lambda p: refusal(p.code) not in ("security", "ambiguous"))
    more = f"; {len(errors) - 1} more problem(s): ckptkeys validate lists them" if len(errors) > 1 else ""
    where = f" [{first.key_path}]" if first.key_path else ""
    said = f"not {verb}: {_REFUSALS[refusal(first.code)]}{more}"
    raise ExportError(first.file or tag.path, f"{first.code}{where}: {first.message} ({said})")


def refusal(code: str) -> str:
    """The class of an ERROR that refuses an export: ``"security"`` (code that loading the file
    with torch would run), ``"ambiguous"`` (a file readers disagree on, or that none reads: the
    rest of the ``security`` group of codes),
    ``"incomplete"`` (a file or key missing, cut short or unreadable) or ``"inconsistent"``
    (files that disagree: counts, stages, precisions, shapes)."""
    if code in ("code-execution", "torchscript-archive", "unknown-global"):
        return "security"
    if code in GROUPS["security"]:
        return "ambiguous"
    if code.startswith("missing-") or code in _INCOMPLETE_CODES:
        return "incomplete"
    return "inconsistent"


def _optimizer_only(problem: Problem) -> bool:
    if problem.code in SECURITY_CODES:
        return False
    if problem.code in OPTIMIZER_CODES:
        return True
    if problem.file is None:
        return False
    path = problem.file.replace(os.sep, "/")
    # A universal checkpoint's files are named by their path inside the tag folder (zero/<name>/<state>.pt).
    name = parse("zero/" + path.rsplit("/zero/", 1)[1] if "/zero/" in path else os.path.basename(path))
    if name is None:
        return False
    return name.kind in _OPTIMIZER_KINDS or (name.kind == FileKind.UNIVERSAL_PARAM_STATE and name.state != "fp32")
