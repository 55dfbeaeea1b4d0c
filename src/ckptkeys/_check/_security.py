"""Problems from what the reader saw of a file's globals: code execution, and files it refused.

The reader classifies every global (:func:`ckptkeys._read._globals.classify`); this module turns
that into the ``code-execution``, ``torchscript-archive``, ``ambiguous-file``, ``unsupported-format``
and ``unreadable-file`` problems that ``validate``, ``scan`` and ``inspect`` report. A TorchScript
archive is refused by the reader (``torch.load`` runs its compiled code, whatever its pickle
names), and is a security problem of its own, like a code-execution global.
"""

from __future__ import annotations

from .._read._errors import AmbiguousFileError, ReadError, TorchScriptArchiveError, UnsupportedFormatError
from .._read._globals import DEEPSPEED_DATA_GLOBALS, FRAMEWORK_DATA_GLOBALS, classify
from .._read._torch import storage_dtype
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._read._globalref import GlobalRef

__all__ = ["globals_problems", "read_error_problems"]


def globals_problems(path: str, refs: Iterable[GlobalRef]) -> list[Problem]:
    """A ``code-execution`` error naming the file's code-execution globals, if it names any, and an
    ``unknown-global`` warning naming the refused globals that are not DeepSpeed's or its frameworks'
    own (what ``torch.load(weights_only=False)`` imports and calls, and ckptkeys knows nothing of)."""
    refs = list(refs)
    problems = []
    dangerous = [ref for ref in refs if classify(ref) == "code-execution"]
    if dangerous:
        names = ", ".join(ref.qualname for ref in dangerous)
        problems.append(
            Problem(
                Severity.ERROR,
                "code-execution",
                f"the pickle names {names}: torch.load(weights_only=False) would run code; never load it that way",
                path,
            )
        )
    unknown = [ref for ref in refs if classify(ref) == "refused" and not _known(ref)]
    if unknown:
        names = ", ".join(ref.qualname for ref in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        problems.append(
            Problem(
                Severity.WARNING,
                "unknown-global",
                f"the pickle names {names}, which neither torch.load(weights_only=True) nor DeepSpeed's own "
                "files name: with weights_only=False torch imports and calls it, which can run code; "
                "load it with weights_only=True, or only if you trust where the file came from",
                path,
            )
        )
    return problems


def _known(ref: GlobalRef) -> bool:
    return ref.qualname in DEEPSPEED_DATA_GLOBALS or ref.qualname in FRAMEWORK_DATA_GLOBALS or bool(storage_dtype(ref))


def read_error_problems(path: str, error: ReadError) -> list[Problem]:
    """The problems of a file that could not be read: the refusal, and the globals named before it."""
    if isinstance(error, TorchScriptArchiveError):  # before its base class: torch runs its code
        code = "torchscript-archive"
    elif isinstance(error, AmbiguousFileError):
        code = "ambiguous-file"
    elif isinstance(error, UnsupportedFormatError):
        code = "unsupported-format"
    else:
        code = "unreadable-file"
    return [Problem(Severity.ERROR, code, error.reason, path), *globals_problems(path, error.globals)]
