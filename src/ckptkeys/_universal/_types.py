"""The universal plan's data types: an output file, a tensor the loader does not restore, the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .._read._repr import counted, nbytes, one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["LATEST_UNIVERSAL", "UNIVERSAL_SUFFIX", "NotRestored", "UniversalFile", "UniversalPlan"]

LATEST_UNIVERSAL: Final = "latest_universal"  # deepspeed/checkpoint/ds_to_universal.py writes it, the engine reads it
UNIVERSAL_SUFFIX: Final = "_universal"  # <tag>_universal, as ds_to_universal's users name the output folder


@dataclass(frozen=True, slots=True, repr=False)
class UniversalFile:
    """One file of the universal tag: a ``.pt`` written from :attr:`content`, or a copied file.

    Its repr is one line: name, what it is, bytes.
    """

    name: str
    """Its path in the universal tag folder, ``/``-separated: ``zero/fc1.weight/exp_avg.pt``,
    ``zero/optimizer_state.pt``, ``mp_rank_00_model_states.pt``."""
    param: str | None
    """The parameter (or frozen parameter, or buffer) whose ``zero/<param>/`` folder holds it;
    ``None`` for ``zero/optimizer_state.pt`` and the model-states copies."""
    copy_of: str | None
    """The source file it is a byte-for-byte copy of (a model-states file), else ``None``."""
    nbytes: int
    """Bytes of tensor data it holds (a copy: the source file's size); headers not counted."""
    content: Any = field(default=None, compare=False)
    """A written file's object, as ``torch.load(weights_only=False)`` returns it, with inert
    stand-ins: ``PtTensor`` (``ckptkeys._export._pt``) for each tensor, whose storage says which
    stored bytes make it; ``Opaque`` records (``ckptkeys._read._pickle``) for DeepSpeed's objects
    (``LossScaler``, ``ZeroStageEnum``, ``SubparamShape``), emitted as DeepSpeed pickles them;
    dicts, lists, tuples, strings, numbers, ``None``. ``None`` for a copy."""

    def __repr__(self) -> str:
        what = "copy" if self.copy_of is not None else "written"
        return one_line(self, self.name, (what, nbytes(self.nbytes)))


@dataclass(frozen=True, slots=True)
class NotRestored:
    """A tensor of the checkpoint that DeepSpeed's universal loader does not load back.

    ``load_checkpoint(..., load_universal)`` skips the module's state dict and walks only the
    parameters the optimizer holds (deepspeed/runtime/engine.py): frozen parameters and buffers
    keep whatever the model was built with. The way out: load them from the model states
    (``mp_rank_*_model_states.pt``'s ``module``) or from the pretrained weights.
    """

    name: str
    kind: Literal["frozen", "buffer"]
    file: str | None
    """The universal file that holds its values (``zero/<name>/fp32.pt``), or ``None`` where
    ``ds_to_universal`` writes none (ZeRO-3)."""


@dataclass(frozen=True, slots=True, repr=False)
class UniversalPlan:
    """What :func:`write_universal` writes, known before any tensor byte is read.

    Its repr is one line (source tag, layout, files, bytes); the whole plan is :meth:`as_dict`.
    """

    checkpoint: str
    """The source tag folder."""
    tag: str
    output: str
    """The universal tag folder written (``<save>/<tag>_universal`` unless asked otherwise)."""
    latest: str
    """The ``latest_universal`` file written last, in the folder that holds :attr:`output`."""
    layout: str
    """``"zero-1/2"``, ``"zero-1/2 tp"``, ``"pipeline"``, ``"zero-3"`` or ``"zero-3 tp"``."""
    zero_stage: int
    """The source's ZeRO stage as ``ds_to_universal`` reads it (1, 2 or 3)."""
    files: tuple[UniversalFile, ...]
    not_restored: tuple[NotRestored, ...] = ()
    inject_missing_state: bool = False
    strict: bool = True

    def __repr__(self) -> str:
        facts = (self.layout, counted(len(self.files), "file"), nbytes(self.total_size))
        return one_line(self, self.checkpoint, facts)

    @property
    def total_size(self) -> int:
        """Bytes of tensor data in all files (copies whole)."""
        return sum(f.nbytes for f in self.files)

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters with a ``zero/<param>/`` folder, in plan order: what ``shard=`` splits."""
        seen = dict.fromkeys(f.param for f in self.files if f.param is not None)
        return tuple(name for name in seen if name is not None)

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``ckptkeys universal --dry-run --json``)."""
        return {
            "schema_version": 1,
            "checkpoint": self.checkpoint,
            "tag": self.tag,
            "output": self.output,
            "latest": self.latest,
            "layout": self.layout,
            "zero_stage": self.zero_stage,
            "inject_missing_state": self.inject_missing_state,
            "strict": self.strict,
            "total_size": self.total_size,
            "files": [
                {"name": f.name, "param": f.param, "copy_of": f.copy_of, "bytes": f.nbytes} for f in self.files
            ],
            "not_restored": [{"name": n.name, "kind": n.kind, "file": n.file} for n in self.not_restored],
        }
