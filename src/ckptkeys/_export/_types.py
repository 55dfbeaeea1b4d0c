"""The plan's data types: the export error, an output tensor, an output file, the plan; sizes and dtypes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from .._errors import CkptKeysError
from .._read._repr import counted, nbytes, one_line
from ._safetensors import ITEMSIZE
from ._spans import FileSpan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Final

    from .._read._source import RemoteObject

__all__ = [
    "DTYPE_CHOICES",
    "FLOATS",
    "SINGLE_FILE",
    "TORCH_NAMES",
    "WEIGHTS_CHOICES",
    "Dtype",
    "ExportError",
    "ExportPlan",
    "ExportShard",
    "ExportTensor",
    "OptionError",
    "Planned",
    "Weights",
    "common_prefix",
    "parse_size",
]

Dtype = Literal["fp32", "bf16", "fp16", "auto"]
"""The output dtypes :func:`~ckptkeys.plan_export` and :func:`~ckptkeys.export` take (``dtype=``)."""
# help(ckptkeys.Dtype) and inspect.getdoc say it too (an alias's __doc__ can be set on 3.10-3.13).
Dtype.__doc__ = "The output dtypes plan_export() and export() take (dtype=): 'fp32', 'bf16', 'fp16' or 'auto'."
DTYPE_CHOICES: Final[tuple[Dtype, ...]] = get_args(Dtype)  # the runtime check, from the type itself
Weights = Literal["masters", "module"]
"""Where exported floating tensors come from (``weights=``): the fp32 master weights or the module's."""
Weights.__doc__ = "Where exported floating tensors come from (weights=): 'masters' (fp32) or 'module' (as saved)."
WEIGHTS_CHOICES: Final[tuple[Weights, ...]] = get_args(Weights)
TORCH_NAMES: Final = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
FLOATS: Final = frozenset({"float32", "bfloat16", "float16", "float64"})
SINGLE_FILE: Final = "model.safetensors"
# An ExportTensor's repr shows a shape of up to this many dimensions; a longer one by its rank.
_SHAPE_DIMS: Final = 8
# transformers / huggingface_hub size units (huggingface_hub.serialization parse_size_to_int).
_UNITS: Final = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


class ExportError(CkptKeysError):
    """A checkpoint that cannot be exported, or an output that must not be overwritten.

    ``path`` names the file or folder; ``reason`` says what is wrong. ``option``, where an
    argument is at fault or would resolve it, is that keyword argument of :func:`plan_export` /
    :func:`write_export` (``"tag"``, ``"tp_rank"``, ``"overwrite"``, ``"dtype"``; ``"out_dir"``
    for the output path itself), else ``None``. The reason names no option in any language's
    spelling: the ``ckptkeys export`` command adds the option as it is typed there (``--tp-rank K``).
    """

    def __init__(self, path: str, reason: str, *, option: str | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.option = option

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason), {"option": self.option})


class OptionError(ExportError, ValueError):
    """An argument of :func:`plan_export` / :func:`write_export` with a value it cannot take.

    A ``ValueError`` (as a bad argument is) and an :class:`ExportError` whose :attr:`option` is
    that keyword argument (``"strip_prefix"``, ``"max_shard_size"``, ...). ``path`` is the
    checkpoint where the value is wrong for it (the message is then ``path: reason``), else the
    option itself, no file being at fault: the message is then ``option reason``
    (``strip_prefix must not be empty``). ``reason`` names no option.
    """

    def __init__(self, option: str, reason: str, path: str | None = None) -> None:
        super().__init__(option if path is None else path, reason, option=option)
        if path is None:
            self.args = (f"{option} {reason}",)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.option, self.reason, None if self.path == self.option else self.path))


@dataclass(frozen=True, slots=True, repr=False)
class ExportTensor:
    """One output tensor: its name, shape and dtype, and where its values are.

    Its repr is one line (name, dtype, shape, bytes, origin); the byte ranges are :attr:`sources`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    """The output dtype, torch's name (``"float32"``)."""
    source_dtype: str
    """The dtype of the bytes in :attr:`sources`."""
    sources: tuple[FileSpan, ...]
    """Byte ranges of checkpoint files; joined, they hold the tensor's elements in order."""
    origin: Literal["trainable", "frozen", "buffer", "module", "expert"]
    mean_of: tuple[tuple[FileSpan, ...], ...] = ()
    """Tensor parallel, a parameter averaged on merging: the element-wise mean (in float32, as
    ``sum(slices) / len(slices)``) of these byte ranges, one per rank; :attr:`sources` is empty."""

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.shape)) if len(self.shape) <= _SHAPE_DIMS else f"{len(self.shape)}-d"
        facts = [self.dtype, f"shape {shape or '()'}", nbytes(self.nbytes), self.origin]
        if self.dtype != self.source_dtype:
            facts.append(f"from {self.source_dtype}")
        if self.mean_of:
            facts.append(f"mean of {len(self.mean_of)} ranks")
        return one_line(self, self.name, facts)

    @property
    def numel(self) -> int:
        """Elements of the tensor: the product of :attr:`shape`."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes it takes in the output, in the output :attr:`dtype`."""
        return self.numel * ITEMSIZE[self.dtype]


@dataclass(frozen=True, slots=True, repr=False)
class ExportShard:
    """One output file and the tensors it holds, in order. Its repr is one line: file, tensors, bytes."""

    filename: str
    tensors: tuple[str, ...]
    nbytes: int
    """Bytes of tensor data (the file adds its header)."""

    def __repr__(self) -> str:
        return one_line(self, self.filename, (counted(len(self.tensors), "tensor"), nbytes(self.nbytes)))


@dataclass(frozen=True, slots=True, repr=False)
class ExportPlan:
    """What :func:`export` writes, known before any tensor byte is read.

    Its repr is one line (tag folder, layout, dtype, weights, tensors, files, bytes); the whole
    plan is :meth:`as_dict` (``pprint.pprint(plan.as_dict())``), the tensors :attr:`tensors`.
    """

    checkpoint: str
    """The tag folder."""
    tag: str
    layout: str
    """``"zero-0"``, ``"zero-1/2"``, ``"zero-3"``, ``"pipeline"``, ``"zero-1/2 moe"``, ``"zero-1/2 tp"``
    or ``"universal"``."""
    precision: str | None
    """The training precision (``"fp32"``, ``"bf16"``, ``"fp16"``)."""
    dtype: str
    """The requested output dtype (``"fp32"``, ``"bf16"``, ``"fp16"``; ``"auto"`` resolved)."""
    tensors: tuple[ExportTensor, ...]
    shards: tuple[ExportShard, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    """Tied parameters left out, each mapped to the name its values are written under."""
    max_shard_size: int = 5 * 10**9
    weights: Weights = "masters"
    """Which weights the floating tensors come from: ``"masters"`` (the fp32 master weights where
    the checkpoint has them) or ``"module"`` (the module's weights as saved)."""
    side_files: tuple[str, ...] = ()
    """Small files copied beside the weights (a Hugging Face save's ``config.json``, tokenizer
    files), as paths; each is written under its base name."""
    side_objects: dict[str, RemoteObject] = field(default_factory=dict, compare=False, repr=False)
    """A remote save's :attr:`side_files`, by URL: the objects they are fetched from, pinned to the
    version the folder's listing gave (empty for a local save)."""

    def __repr__(self) -> str:
        facts = (self.layout, f"{self.dtype} from {self.weights}", counted(len(self.tensors), "tensor"))
        files = counted(len(self.shards) + len(self.side_files), "file")
        return one_line(self, self.checkpoint, (*facts, files, nbytes(self.total_size)))

    @property
    def total_size(self) -> int:
        """Bytes of every output tensor (the index's ``metadata.total_size``), headers not counted."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def sharded(self) -> bool:
        """Whether the output is more than one file (shards and ``model.safetensors.index.json``)."""
        return len(self.shards) > 1

    @property
    def common_prefix(self) -> str | None:
        """The prefix ending in ``.`` that every tensor and alias name shares (a Lightning module's
        attribute, ``model.``), or ``None``: what ``--strip-prefix`` (``strip_prefix=``) would take off."""
        return common_prefix([t.name for t in self.tensors] + list(self.aliases))

    def index(self) -> dict[str, Any]:
        """The ``model.safetensors.index.json`` document (written only when sharded)."""
        weight_map = {name: shard.filename for shard in self.shards for name in shard.tensors}
        return {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}

    def metadata(self) -> dict[str, str]:
        """The ``__metadata__`` of every safetensors file written from this plan."""
        return {"format": "pt", "weights": self.weights, "ckptkeys_plan": self.identity()}

    def identity(self) -> str:
        """A digest of what makes the plan: the tag, the tensors (names, shapes, dtypes), their files,
        the shard size, the weights, and the checkpoint files read (their paths relative to the tag
        folder, and sizes). Jobs of a job array that mount the checkpoint at different paths agree;
        a job run with another ``--max-shard-size``, dtype or checkpoint does not.

        Raises :class:`ExportError` naming a source file that can no longer be found.
        """
        import json
        import os

        try:
            from _blake2 import blake2b  # CPython's own: hashlib would load OpenSSL, 3.6 MB more peak memory
        except ImportError:
            from hashlib import blake2b

        sources: dict[str, int] = {}
        for tensor in self.tensors:
            for span in (*tensor.sources, *(s for spans in tensor.mean_of for s in spans)):
                if span.path not in sources and span.remote is not None:  # a URL: its size as listed
                    sources[span.path] = span.remote.size
                elif span.path not in sources:
                    try:
                        sources[span.path] = os.stat(span.path).st_size
                    except OSError as error:
                        raise ExportError(span.path, f"cannot be read: {error.strerror or error}") from None
        document = {
            "tag": self.tag,  # two saves of one run have the same relative paths and sizes, not the same tag
            "tensors": [[t.name, list(t.shape), t.dtype, t.source_dtype] for t in self.tensors],
            "shards": [[s.filename, list(s.tensors)] for s in self.shards],
            "max_shard_size": self.max_shard_size,
            "weights": self.weights,
            "aliases": sorted(self.aliases.items()),
            "sources": sorted(
                [os.path.relpath(p, self.checkpoint).replace(os.sep, "/"), n] for p, n in sources.items()
            ),
        }
        return blake2b(json.dumps(document, sort_keys=True).encode("utf-8"), digest_size=16).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``ckptkeys export --dry-run --json``)."""
        return {
            "schema_version": 1,
            "checkpoint": self.checkpoint,
            "tag": self.tag,
            "layout": self.layout,
            "precision": self.precision,
            "dtype": self.dtype,
            "total_size": self.total_size,
            "max_shard_size": self.max_shard_size,
            "weights": self.weights,
            "side_files": list(self.side_files),
            "common_prefix": self.common_prefix,
            "shards": [{"filename": s.filename, "bytes": s.nbytes, "tensors": list(s.tensors)} for s in self.shards],
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "source_dtype": t.source_dtype,
                    "bytes": t.nbytes,
                    "origin": t.origin,
                    "sources": [_span(s) for s in t.sources],
                    "mean_of": [[_span(s) for s in spans] for spans in t.mean_of],
                }
                for t in self.tensors
            ],
            "aliases": dict(self.aliases),
        }


def _span(span: FileSpan) -> dict[str, Any]:
    return {"path": span.path, "offset": span.offset, "length": span.length, "swap": span.swap}


def common_prefix(names: Iterable[str]) -> str | None:
    """The longest prefix ending in ``.`` that every one of ``names`` (at least two) starts with, or ``None``.

    Given the plan's tensor and alias names, it is the module attribute a Lightning save adds
    (``model.``); the tied alias (``model.lm_head.weight``) keeps it from reaching into the model's
    own first module when the other names all start there.
    """
    listed = [name for name in names if isinstance(name, str)]
    if len(listed) < 2:
        return None
    shortest, longest = min(listed), max(listed)  # the common prefix of all is that of these two
    end = 0
    for a, b in zip(shortest, longest, strict=False):
        if a != b:
            break
        end += 1
    cut = shortest.rfind(".", 0, end) + 1
    return shortest[:cut] if cut else None


def parse_size(size: int | str) -> int:
    """A shard size as ``transformers`` spells it: ``"5GB"`` = 5 * 10**9 bytes, ``"500MiB"``, ``1000``.

    As ``transformers.utils.hub.convert_file_size_to_int``: KB/MB/GB are powers of ten,
    KiB/MiB/GiB powers of two, and a lowercase final ``b`` (``"5Gb"``) means bits. TB/TiB and
    decimals (``"1.5GB"``, as ``huggingface_hub`` takes them) are accepted too.
    """
    if type(size) is int:  # not a bool: True is no size
        if size <= 0:
            raise OptionError("max_shard_size", f"must be positive, not {size}")
        return size
    if not isinstance(size, str):
        raise OptionError(
            "max_shard_size", "must be an int of bytes or a str such as '5GB', '500MB', '2GiB', not "
            f"{size!r:.40} (a {type(size).__name__})"
        )  # fmt: skip
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
    unit = match.group(2) if match else ""
    if match is None or unit.upper() not in _UNITS:
        raise OptionError(
            "max_shard_size",
            f"must be a number with an optional unit (KB, MB, GB, TB, KiB, MiB, GiB), not {size!r:.40}",
        )
    value = int(float(match.group(1)) * _UNITS[unit.upper()])
    if unit.endswith("b") and not unit.upper().endswith("IB") and len(unit) > 1:
        value //= 8  # "5Gb": gigabits
    if value <= 0:
        raise OptionError("max_shard_size", f"must be positive, not {size!r:.40}")
    return value


Planned = ExportTensor  # while planning, dtype is still source_dtype; plan_export sets the output dtype
