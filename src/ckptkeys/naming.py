"""Build and parse the names of DeepSpeed checkpoint files and folders.

Every name part comes from :class:`ckptkeys.NamingKeys`; the formats are DeepSpeed 0.19.8's
(``runtime/engine.py``, ``runtime/pipe/module.py``, ``checkpoint/ds_to_universal.py``)::

    mp_rank_{mp:02d}_model_states.pt                              MODEL_STATES
    zero_pp_rank_{dp}_mp_rank_{mp:02d}_model_states.pt            ZERO3_MODEL_STATES
    [bf16_|fp16_]zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt   OPTIM_STATES
    ..._mp_rank_{mp:02d}optim_states.pt (legacy, load only)       OPTIM_STATES, legacy=True
    layer_{idx:02d}[-model_{mp:02d}]-model_states.pt              LAYER_MODEL_STATES
    layer_{layer}_expert_{e}_mp_rank_{mp:02d}_model_states.pt     EXPERT_MODEL_STATES
    expert_{e}_mp_rank_{mp:02d}_model_states.pt (legacy)          EXPERT_MODEL_STATES, legacy=True
    expp_rank_{r}_mp_rank_{mp:02d}_optim_states.pt                EXPERT_OPTIM_STATES
    zero/<param>/<state>.pt                                       UNIVERSAL_PARAM_STATE
    zero/optimizer_state.pt                                       UNIVERSAL_OPTIMIZER_STATE
    latest, latest_universal, zero_to_fp32.py

``parse(build(record)) == record`` for every valid record, and ``build(parse(name)) == name``
for every name DeepSpeed writes. ``parse`` also accepts the spellings DeepSpeed's own readers
accept (an mp rank not padded to two digits, a data-parallel rank with leading zeros) and
records the numbers; ``build`` always writes DeepSpeed's spelling.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from ._keys._registry import NamingKeys as _N

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "CheckpointName",
    "FileKind",
    "build",
    "expert_model_states",
    "expert_optim_states",
    "layer_model_states",
    "model_states",
    "optim_states",
    "parse",
    "zero3_model_states",
]

PRECISIONS: Final = ("", "bf16", "fp16")
"""Precision prefixes of optimizer shards: none, ``bf16_``, ``fp16_``."""


class FileKind(enum.Enum):
    """What a checkpoint file (or pointer file) holds."""

    MODEL_STATES = "model_states"
    ZERO3_MODEL_STATES = "zero3_model_states"
    OPTIM_STATES = "optim_states"
    LAYER_MODEL_STATES = "layer_model_states"
    EXPERT_MODEL_STATES = "expert_model_states"
    EXPERT_OPTIM_STATES = "expert_optim_states"
    UNIVERSAL_PARAM_STATE = "universal_param_state"
    UNIVERSAL_OPTIMIZER_STATE = "universal_optimizer_state"
    LATEST = "latest"
    LATEST_UNIVERSAL = "latest_universal"
    RECOVERY_SCRIPT = "recovery_script"


# The fields each kind carries; every other field must be None (False for `legacy`).
_FIELDS: Final[dict[FileKind, frozenset[str]]] = {
    FileKind.MODEL_STATES: frozenset({"mp_rank"}),
    FileKind.ZERO3_MODEL_STATES: frozenset({"dp_rank", "mp_rank"}),
    FileKind.OPTIM_STATES: frozenset({"dp_rank", "mp_rank", "precision", "legacy"}),
    FileKind.LAYER_MODEL_STATES: frozenset({"layer", "mp_rank"}),
    FileKind.EXPERT_MODEL_STATES: frozenset({"layer", "expert", "mp_rank", "legacy"}),
    FileKind.EXPERT_OPTIM_STATES: frozenset({"ep_rank", "mp_rank"}),
    FileKind.UNIVERSAL_PARAM_STATE: frozenset({"param", "state"}),
    FileKind.UNIVERSAL_OPTIMIZER_STATE: frozenset(),
    FileKind.LATEST: frozenset(),
    FileKind.LATEST_UNIVERSAL: frozenset(),
    FileKind.RECOVERY_SCRIPT: frozenset(),
}
# Fields a kind cannot do without (LAYER_MODEL_STATES' mp rank is optional; a legacy expert has no layer).
_REQUIRED: Final[dict[FileKind, frozenset[str]]] = {
    FileKind.MODEL_STATES: frozenset({"mp_rank"}),
    FileKind.ZERO3_MODEL_STATES: frozenset({"dp_rank", "mp_rank"}),
    FileKind.OPTIM_STATES: frozenset({"dp_rank", "mp_rank", "precision"}),
    FileKind.LAYER_MODEL_STATES: frozenset({"layer"}),
    FileKind.EXPERT_MODEL_STATES: frozenset({"expert", "mp_rank"}),
    FileKind.EXPERT_OPTIM_STATES: frozenset({"ep_rank", "mp_rank"}),
    FileKind.UNIVERSAL_PARAM_STATE: frozenset({"param", "state"}),
}
_INT_FIELDS: Final = ("mp_rank", "dp_rank", "layer", "expert", "ep_rank")


@dataclass(frozen=True, slots=True)
class CheckpointName:
    """What a file name says: its kind and the ranks, layer, expert or parameter it is for."""

    kind: FileKind
    mp_rank: int | None = None
    dp_rank: int | None = None
    layer: int | None = None
    """Pipeline layer index, or the MoE layer id of an expert file."""
    expert: int | None = None
    ep_rank: int | None = None
    """Expert-parallel rank of an ``expp_rank_*`` file."""
    precision: str | None = None
    """Optimizer shards only: ``"bf16"``, ``"fp16"`` or ``""`` (no prefix)."""
    legacy: bool = False
    """A load-only legacy spelling (optimizer shard without ``_`` before ``optim_states``; expert without layer)."""
    param: str | None = None
    """Universal checkpoints: the parameter's name (``fc1.weight``)."""
    state: str | None = None
    """Universal checkpoints: the state's name (``fp32``, ``exp_avg``)."""

    @property
    def path(self) -> str:
        """The name DeepSpeed writes for this record (a relative path for universal files)."""
        return build(self)


def _mp(mp_rank: int) -> str:
    return f"{_N.MODEL_FILE_PREFIX}{mp_rank:02d}"


def build(record: CheckpointName) -> str:
    """The file name (``/``-separated relative path for universal files) of ``record``.

    Raises ``ValueError`` naming what is wrong with an invalid record.
    """
    _check(record)  # from here on, every field the kind requires is set
    r, kind = record, record.kind
    mp = _mp(r.mp_rank or 0)
    if kind is FileKind.MODEL_STATES:
        return f"{mp}{_N.MODEL_FILE_SUFFIX}"
    if kind is FileKind.ZERO3_MODEL_STATES:
        return f"{_N.ZERO_FILE_PREFIX}{r.dp_rank}_{mp}{_N.MODEL_FILE_SUFFIX}"
    if kind is FileKind.OPTIM_STATES:
        prefix = f"{r.precision}_" if r.precision else ""
        suffix = _N.LEGACY_OPTIM_FILE_SUFFIX if r.legacy else _N.OPTIM_FILE_SUFFIX
        return f"{prefix}{_N.ZERO_FILE_PREFIX}{r.dp_rank}_{mp}{suffix}"
    if kind is FileKind.LAYER_MODEL_STATES:
        model = "" if r.mp_rank is None else f"{_N.PIPELINE_MODEL_INFIX}{r.mp_rank:02d}"
        return f"{_N.LAYER_FILE_PREFIX}{r.layer or 0:02d}{model}{_N.PIPELINE_MODEL_FILE_SUFFIX}"
    if kind is FileKind.EXPERT_MODEL_STATES:
        layer = "" if r.layer is None else f"{_N.LAYER_FILE_PREFIX}{r.layer}_"
        return f"{layer}{_N.EXPERT_FILE_PREFIX}{r.expert}_{mp}{_N.MODEL_FILE_SUFFIX}"
    if kind is FileKind.EXPERT_OPTIM_STATES:
        return f"{_N.EXPERT_PARALLEL_FILE_PREFIX}{r.ep_rank}_{mp}{_N.OPTIM_FILE_SUFFIX}"
    if kind is FileKind.UNIVERSAL_PARAM_STATE:
        return f"{_N.UNIVERSAL_ZERO_FOLDER}/{r.param}/{r.state}{_N.CHECKPOINT_FILE_EXTENSION}"
    return str.__str__(_SINGLE_NAMES[kind])


_SINGLE_NAMES: Final = {
    FileKind.UNIVERSAL_OPTIMIZER_STATE: f"{_N.UNIVERSAL_ZERO_FOLDER}/{_N.UNIVERSAL_OPTIMIZER_STATE_FILE}",
    FileKind.LATEST: str.__str__(_N.LATEST),
    FileKind.LATEST_UNIVERSAL: str.__str__(_N.LATEST_UNIVERSAL),
    FileKind.RECOVERY_SCRIPT: str.__str__(_N.RECOVERY_SCRIPT),
}


def _check(record: CheckpointName) -> None:
    if not isinstance(record.kind, FileKind):
        raise ValueError(f"kind must be a FileKind, not {record.kind!r}")
    allowed = _FIELDS[record.kind]
    for name in ("mp_rank", "dp_rank", "layer", "expert", "ep_rank", "precision", "param", "state"):
        value = getattr(record, name)
        if value is not None and name not in allowed:
            raise ValueError(f"{record.kind.name} names have no {name} (got {value!r})")
        if value is None and name in _REQUIRED.get(record.kind, ()):
            raise ValueError(f"{record.kind.name} names need a {name}")
    if record.legacy and "legacy" not in allowed:
        raise ValueError(f"{record.kind.name} names have no legacy spelling")
    for name in _INT_FIELDS:
        value = getattr(record, name)
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError(f"{name} must be a non-negative int, not {value!r}")
    if record.precision is not None and record.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {record.precision!r}")
    if record.kind is FileKind.EXPERT_MODEL_STATES and record.legacy != (record.layer is None):
        raise ValueError("an expert file has a layer id unless it is the legacy spelling (and then not)")
    for name in ("param", "state"):
        value = getattr(record, name)
        if value is not None and (
            not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", "..")
        ):
            raise ValueError(f"{name} must be a non-empty name without '/', not {value!r}")


# -- parsing -----------------------------------------------------------------------------------


def _escape(part: str) -> str:
    return re.escape(str.__str__(part))


_NUM: Final = r"([0-9]+)"  # ASCII digits: \d would also match other scripts
_MP: Final = _escape(_N.MODEL_FILE_PREFIX) + _NUM
_PATTERNS: Final = (
    (
        FileKind.OPTIM_STATES,
        re.compile(
            rf"(?:({_escape(_N.BF16_PREFIX)}|{_escape(_N.FP16_PREFIX)}))?{_escape(_N.ZERO_FILE_PREFIX)}{_NUM}_{_MP}"
            rf"(_?){_escape(_N.LEGACY_OPTIM_FILE_SUFFIX)}"
        ),
    ),
    (
        FileKind.ZERO3_MODEL_STATES,
        re.compile(rf"{_escape(_N.ZERO_FILE_PREFIX)}{_NUM}_{_MP}{_escape(_N.MODEL_FILE_SUFFIX)}"),
    ),
    (FileKind.MODEL_STATES, re.compile(rf"{_MP}{_escape(_N.MODEL_FILE_SUFFIX)}")),
    (
        FileKind.LAYER_MODEL_STATES,
        re.compile(
            rf"{_escape(_N.LAYER_FILE_PREFIX)}{_NUM}(?:{_escape(_N.PIPELINE_MODEL_INFIX)}{_NUM})?"
            rf"{_escape(_N.PIPELINE_MODEL_FILE_SUFFIX)}"
        ),
    ),
    (
        FileKind.EXPERT_MODEL_STATES,
        re.compile(
            rf"(?:{_escape(_N.LAYER_FILE_PREFIX)}{_NUM}_)?{_escape(_N.EXPERT_FILE_PREFIX)}{_NUM}_{_MP}"
            rf"{_escape(_N.MODEL_FILE_SUFFIX)}"
        ),
    ),
    (
        FileKind.EXPERT_OPTIM_STATES,
        re.compile(rf"{_escape(_N.EXPERT_PARALLEL_FILE_PREFIX)}{_NUM}_{_MP}{_escape(_N.OPTIM_FILE_SUFFIX)}"),
    ),
)
_STATE_FILE: Final = re.compile(rf"(.+){_escape(_N.CHECKPOINT_FILE_EXTENSION)}", re.DOTALL)
_BY_SINGLE_NAME: Final = {name: kind for kind, name in _SINGLE_NAMES.items() if "/" not in name}


def parse(name: str | os.PathLike[str]) -> CheckpointName | None:
    """What the file name ``name`` says, or ``None`` if it is no checkpoint name.

    ``name`` is a file name or a relative path; only the file name counts, except for the
    universal files ``zero/<param>/<state>.pt`` and ``zero/optimizer_state.pt``, which are
    recognised by their last two or three parts. The file system is not touched.
    """
    text = os.fspath(name)
    parts = [p for p in re.split(r"[/\\]", text) if p]
    if not parts:
        return None
    base = parts[-1]
    if len(parts) >= 3 and parts[-3] == _N.UNIVERSAL_ZERO_FOLDER:
        match = _STATE_FILE.fullmatch(base)
        if match is None or parts[-2] in (".", ".."):
            return None
        return CheckpointName(FileKind.UNIVERSAL_PARAM_STATE, param=parts[-2], state=match.group(1))
    if len(parts) >= 2 and parts[-2] == _N.UNIVERSAL_ZERO_FOLDER:
        return CheckpointName(FileKind.UNIVERSAL_OPTIMIZER_STATE) if base == _N.UNIVERSAL_OPTIMIZER_STATE_FILE else None
    single = _BY_SINGLE_NAME.get(base)
    if single is not None:
        return CheckpointName(single)
    for kind, pattern in _PATTERNS:
        match = pattern.fullmatch(base)
        if match is not None:
            return _record(kind, match.groups())
    return None


def _record(kind: FileKind, groups: tuple[str | None, ...]) -> CheckpointName:
    if kind is FileKind.OPTIM_STATES:
        prefix, dp, mp, underscore = groups
        precision = (prefix or "").rstrip("_")
        return CheckpointName(
            kind, mp_rank=int(mp or 0), dp_rank=int(dp or 0), precision=precision, legacy=not underscore
        )
    if kind is FileKind.ZERO3_MODEL_STATES:
        dp, mp = groups
        return CheckpointName(kind, mp_rank=int(mp or 0), dp_rank=int(dp or 0))
    if kind is FileKind.MODEL_STATES:
        return CheckpointName(kind, mp_rank=int(groups[0] or 0))
    if kind is FileKind.LAYER_MODEL_STATES:
        layer, mp = groups
        return CheckpointName(kind, layer=int(layer or 0), mp_rank=None if mp is None else int(mp))
    if kind is FileKind.EXPERT_MODEL_STATES:
        layer, expert, mp = groups
        return CheckpointName(
            kind,
            layer=None if layer is None else int(layer),
            expert=int(expert or 0),
            mp_rank=int(mp or 0),
            legacy=layer is None,
        )
    ep, mp = groups
    return CheckpointName(kind, ep_rank=int(ep or 0), mp_rank=int(mp or 0))


# -- constructors ------------------------------------------------------------------------------


def model_states(mp_rank: int = 0) -> str:
    """``mp_rank_{mp:02d}_model_states.pt``: model states without ZeRO-3."""
    return build(CheckpointName(FileKind.MODEL_STATES, mp_rank=mp_rank))


def zero3_model_states(dp_rank: int, mp_rank: int = 0) -> str:
    """``zero_pp_rank_{dp}_mp_rank_{mp:02d}_model_states.pt``: one per rank at ZeRO-3."""
    return build(CheckpointName(FileKind.ZERO3_MODEL_STATES, mp_rank=mp_rank, dp_rank=dp_rank))


def optim_states(dp_rank: int, mp_rank: int = 0, precision: str = "") -> str:
    """``[bf16_|fp16_]zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt``: a ZeRO optimizer shard."""
    return build(CheckpointName(FileKind.OPTIM_STATES, mp_rank=mp_rank, dp_rank=dp_rank, precision=precision))


def layer_model_states(layer: int, mp_rank: int | None = None) -> str:
    """``layer_{idx:02d}[-model_{mp:02d}]-model_states.pt``: one pipeline layer."""
    return build(CheckpointName(FileKind.LAYER_MODEL_STATES, layer=layer, mp_rank=mp_rank))


def expert_model_states(expert: int, mp_rank: int = 0, layer: int | None = None) -> str:
    """``layer_{layer}_expert_{e}_mp_rank_{mp:02d}_model_states.pt`` (legacy without ``layer``)."""
    return build(
        CheckpointName(FileKind.EXPERT_MODEL_STATES, layer=layer, expert=expert, mp_rank=mp_rank, legacy=layer is None)
    )


def expert_optim_states(ep_rank: int, mp_rank: int = 0) -> str:
    """``expp_rank_{r}_mp_rank_{mp:02d}_optim_states.pt``: MoE optimizer state without ZeRO."""
    return build(CheckpointName(FileKind.EXPERT_OPTIM_STATES, ep_rank=ep_rank, mp_rank=mp_rank))
