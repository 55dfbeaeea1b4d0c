"""The errors of reading a file: every one a :class:`ReadError` naming the file and the reason."""

from __future__ import annotations

from .._errors import CkptKeysError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._globalref import GlobalRef

__all__ = [
    "AmbiguousFileError",
    "CorruptCheckpointError",
    "LimitError",
    "NotACheckpointError",
    "ReadError",
    "SafetensorsHeaderError",
    "TorchScriptArchiveError",
    "UnsupportedFormatError",
]


class ReadError(CkptKeysError):
    """A file could not be read. ``path`` names it; ``reason`` says what is wrong.

    ``globals`` lists every global the file's pickles named before reading stopped: ``torch.load``
    would already have imported (and possibly called) them, so a refused file still shows them.
    """

    globals: tuple[GlobalRef, ...] = ()

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason), {"globals": self.globals})


class NotACheckpointError(ReadError):
    """The file is not a torch checkpoint (neither torch's zip format nor its legacy format)."""


class CorruptCheckpointError(ReadError):
    """The file looks like a checkpoint but is truncated, inconsistent or malformed."""


class SafetensorsHeaderError(CorruptCheckpointError):
    """A safetensors file whose header the format's own reader refuses (see ``read_safetensors``).

    ``tensor`` names the tensor at fault, or is ``None`` for the header as a whole.
    """

    def __init__(self, path: str, reason: str, tensor: str | None = None) -> None:
        super().__init__(path, reason if tensor is None else f"tensor {tensor!r:.200} {reason}")
        self.tensor = tensor
        self.why = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.why, self.tensor), {"globals": self.globals})


class LimitError(ReadError):
    """Reading the file would exceed one of the reader's :class:`~ckptkeys.Limits`."""

    def __init__(self, path: str, limit: str, value: int) -> None:
        super().__init__(
            path,
            f"exceeds the reader's limit {limit} ({value}); the rest of the file was not read",
        )
        self.limit = limit
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.limit, self.value), {"globals": self.globals})


class AmbiguousFileError(CorruptCheckpointError):
    """Readers disagree on what the file holds, so it is refused rather than read one way.

    ``torch.load`` and other readers (Python's ``zipfile``, a streaming unpickler) would see
    different content: ``interpretations`` names both, the first being what ``torch.load``
    reads. torch.save never writes such a file; a doctored one can show a benign face to one
    reader and a payload to the other.
    """

    def __init__(self, path: str, reason: str, interpretations: tuple[str, str]) -> None:
        super().__init__(path, f"{reason}: {interpretations[0]}; {interpretations[1]}")
        self.interpretations = interpretations
        self.why = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.why, self.interpretations), {"globals": self.globals})


class UnsupportedFormatError(ReadError):
    """A file ``torch.load`` reads in a format ckptkeys does not read (torch's pre-1.0 tar format).

    It is refused, never read another way: torch would unpickle members ckptkeys cannot show.
    """


class TorchScriptArchiveError(UnsupportedFormatError):
    """A TorchScript archive: ``torch.load`` hands it to ``torch.jit.load``, which runs its code.

    torch recognises one by a record ``<folder>/constants.pkl`` (``_is_torchscript_zip``);
    ``torch.jit.load`` then compiles the archive's ``code/`` and runs it (a class's
    ``__setstate__``, for one, which can create and write files). What ``data.pkl`` holds says
    nothing about that, so the file is refused unread, whatever it holds: a security problem,
    not a malformed file. ``record`` is the member's name.
    """

    def __init__(self, path: str, record: str) -> None:
        super().__init__(
            path,
            f"is a TorchScript archive (it holds {record!r:.120}): torch.load hands it to torch.jit.load, "
            "which compiles the archive's code/ and runs it (a TorchScript __setstate__ can write files); "
            "its data.pkl says nothing about what runs. Never torch.load or torch.jit.load it unless you "
            "trust its source; ckptkeys does not read TorchScript",
        )
        self.record = record

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.record), {"globals": self.globals})
