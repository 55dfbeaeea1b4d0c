"""The codes ``ckptkeys lint`` reports (:data:`CODES`, with their messages), a finding (:class:`Finding`),
and which codes ``--select``/``--ignore`` let through (:func:`selected`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

CODES: Final[dict[str, str]] = {
    "CK001": "the file cannot be read or decoded, or does not parse as Python",
    "CK101": "checkpoint key in a subscript: d['key']",
    "CK102": "checkpoint key passed to get, pop or setdefault",
    "CK103": "checkpoint key in an `in` / `not in` test",
    "CK104": "checkpoint key as a dict-display key: {'key': ...}",
    "CK105": "checkpoint key compared with == or != to a key variable",
    "CK106": "checkpoint key as a key= keyword argument",
    "CK107": "checkpoint keys in a collection of keys: ['module', 'optimizer', ...]",
    "CK201": "checkpoint file name rebuilt from naming pieces (f-string, +, % or .format)",
    "CK202": "literal checkpoint file name (or the 'latest' file as a path)",
    "CK203": "checkpoint tag built, written or parsed by hand: f'global_step{step}'",
    "CK204": "checkpoint file names matched by hand: name.endswith('_model_states.pt')",
    "CK301": "import from deepspeed.checkpoint.constants",
    "CK302": "import of key constants from the deepspeed.checkpoint package",
    "CK303": "hand-copied DeepSpeed constant: ZERO_FILE_PREFIX = 'zero_pp_rank_'",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One loose string (or import) and the registry spelling to use instead."""

    path: str
    line: int
    """1-based line of the start of the offending expression."""
    col: int
    """1-based column, in characters."""
    code: str
    message: str
    value: str | None = None
    """The string literal's value (``None`` for imports and strings built from parts)."""
    candidates: tuple[str, ...] = ()
    """Registry members with that value, most likely first: ``("OptimizerKeys.ZERO_STAGE",)``."""
    replacement: str | None = None
    """What ``fix_source`` writes in place of the expression; ``None`` if it is not fixable."""
    imports: tuple[str, ...] = ()
    """Names ``fix_source`` imports from ``ckptkeys`` for the replacement."""
    evidence: str = ""
    """Why it was reported: what in the code around it shows it is about DeepSpeed checkpoints."""
    end_line: int = 0
    """1-based line of the end of the expression (0: not known; the start line)."""
    end_col: int = 0
    """1-based column just past the end of the expression, in characters (0: not known; the start column)."""
    _span: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)
    # (line, byte col, end line, end byte col): where fix_source writes

    def __str__(self) -> str:
        # ruff's concise line: the colon after the column is what editors' problem matchers expect.
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"

    @property
    def fixable(self) -> bool:
        return self.replacement is not None


def selected(code: str, select: Iterable[str] | None, ignore: Iterable[str] | None) -> bool:
    """Whether ``--select``/``--ignore`` (code prefixes; ``None``: not given) let ``code`` through."""
    if select is not None and not any(code.startswith(prefix) for prefix in select):
        return False
    return not (ignore is not None and any(code.startswith(prefix) for prefix in ignore))
