"""A safetensors file validated: its header read and checked (``_read._safetensors``), and what it is.

Nothing DeepSpeed-specific is asked of it. Every problem the format's rules can find is one the
reader raises (:class:`~ckptkeys.SafetensorsHeaderError`): a file whose header breaks them is
unreadable input, as a corrupt torch file is. A readable one gets the ``not-deepspeed``
information a plain torch file gets, saying what it holds.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from .._read._errors import AmbiguousFileError, NotACheckpointError, ReadError
from .._read._limits import Limits
from .._read._reader import read, read_object
from .._read._repr import counted
from .._read._repr import severities as _severities
from .._read._safetensors import SafetensorsFile, read_safetensors, read_safetensors_object
from .._read._source import RemoteObject, is_url, local_only, open_remote
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from .._read._reader import Checkpoint

__all__ = [
    "SafetensorsReport",
    "describe_safetensors",
    "safetensors_object_report",
    "severities",
    "validate_safetensors",
]


@dataclass(frozen=True, slots=True, repr=False)
class SafetensorsReport:
    """One validated safetensors file: its header, and what validation says of it.

    Its repr is one line (file, tensors, problems by severity); the header is :attr:`file`.
    """

    path: str
    file: SafetensorsFile
    problems: tuple[Problem, ...]

    def __repr__(self) -> str:
        count = len(self.file.tensors)
        facts = f"{counted(count, 'tensor')}, {severities(self.problems)}"
        return f"<SafetensorsReport {self.path!r}: {facts}>"

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem of the report (here :attr:`problems`), as every report has them."""
        return self.problems


def severities(problems: tuple[Problem, ...]) -> str:
    """The reprs' summary of problems: ``"1 error, 2 warnings, 1 info"``, or ``"no problems"``
    (``_read._repr.severities``, the one every report's repr uses)."""
    return _severities(p.severity for p in problems)


def describe_safetensors(file: SafetensorsFile) -> str:
    """What a safetensors file holds, by dtype: ``"a safetensors file of 4 tensors (BF16 1, F32 3)"``."""
    count = len(file.tensors)
    dtypes = Counter(t.dtype for t in file.tensors)
    by_dtype = f" ({', '.join(f'{d} {n}' for d, n in sorted(dtypes.items()))})" if dtypes else ""
    return f"a safetensors file of {count} tensor{'' if count == 1 else 's'}{by_dtype}"


def _not_a_torch_file(path: str, file: SafetensorsFile, read_torch: Callable[[], Checkpoint]) -> None:
    """Refuse a file ``torch.load`` would read as a pickle too: shown as safetensors, it would hide
    what the pickle names.

    ``torch.load`` of a file that is no zip unpickles it from its first byte. A safetensors file's
    length prefix is no pickle, and the reader says so (``NotACheckpointError``, no global named).
    Anything else (a pickle that reads, names globals before failing, or a tar torch would open)
    makes the file two things at once: :class:`~ckptkeys.AmbiguousFileError`, with the globals.
    """
    try:
        checkpoint = read_torch()
    except NotACheckpointError as error:
        if not error.globals:
            return
        how, globals_ = f"torch.load unpickles it ({error.reason})", error.globals
    except ReadError as error:
        how, globals_ = f"torch.load unpickles it ({error.reason})", error.globals
    else:  # torch reads it whole (a zip behind the header, or a legacy pickle): every global it names
        how, globals_ = f"torch.load reads it as a torch checkpoint ({checkpoint.format})", checkpoint.globals
    names = ", ".join(ref.qualname for ref in globals_)
    ambiguous = AmbiguousFileError(
        path,
        "torch.load and safetensors read it differently",
        (
            f"{how}, and its pickles name {names or 'no global'}",
            f"safetensors reads a header of {len(file.tensors)} tensor(s)",
        ),
    )
    ambiguous.globals = tuple(globals_)
    raise ambiguous


def validate_safetensors(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> SafetensorsReport:
    """Read the safetensors file at ``path`` and say what it is (a ``not-deepspeed`` information).

    Raises :class:`~ckptkeys.SafetensorsHeaderError` for a header the format refuses,
    :class:`~ckptkeys.AmbiguousFileError` for a file ``torch.load`` would unpickle too (a
    polyglot), and :class:`~ckptkeys.ReadError` for a file that cannot be read. ``path`` may be a
    URL (``storage_options`` passed to its filesystem).
    """
    root = os.fspath(path)
    if is_url(root):
        return safetensors_object_report(open_remote(root, storage_options))
    local_only(root, storage_options)
    file = read_safetensors(root)
    _not_a_torch_file(root, file, lambda: read(root))
    return _report(root, file)


def safetensors_object_report(source: RemoteObject) -> SafetensorsReport:
    """:func:`validate_safetensors` of a remote object: its header (two ranged GETs), then the
    polyglot check, which reads it as ``read`` reads a URL (its head and tail, pinned to the same version)."""
    file = read_safetensors_object(source)
    _not_a_torch_file(source.url, file, lambda: read_object(source, Limits()))
    return _report(source.url, file)


def _report(root: str, file: SafetensorsFile) -> SafetensorsReport:
    info = Problem(Severity.INFO, "not-deepspeed", f"not a DeepSpeed checkpoint: {describe_safetensors(file)}", root)
    return SafetensorsReport(root, file, (info,))
