"""Schemas of the dicts DeepSpeed writes: ``TypedDict``s for mypy, key specs for validation.

The ``TypedDict``s let a checkpoint writer (or reader) be type-checked; their keys are the
registry's values (a test proves it key by key). The :data:`SPECS` say, for each kind of
dict, which keys DeepSpeed writes, from which version on, and of which type:
:func:`ckptkeys.validate` checks dicts against them. Versions matter: checkpoints from
DeepSpeed 0.14 lack ``param_alignment_paddings`` and ``checkpoint_parallel_dimensions`` and
carry ``sparse_tensor_module_names``; the specs know that instead of flagging it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from typing_extensions import NotRequired

from ._keys._registry import (
    ModuleKeys,
    OptimFileKeys,
    OptimizerKeys,
    ParallelDimsKeys,
    ParamPatternKeys,
    SubParamKeys,
    UniversalKeys,
    UniversalParamKeys,
    VocabKeys,
)
from ._keys._strenum import KeyGroup

__all__ = [
    "SPECS",
    "BF16OptimizerState",
    "DictKind",
    "FP16WrapperState",
    "KeySpec",
    "ModelStates",
    "OptimStatesFile",
    "ParallelDimensions",
    "SubParamEntry",
    "UniversalCheckpointInfo",
    "UniversalOptimizerState",
    "UniversalParamFile",
    "Zero3OptimizerState",
    "ZeroOptimizerState",
    "optimizer_state_kind",
    "spec_for",
]


class ParallelDimensions(TypedDict):
    """``checkpoint_parallel_dimensions`` (DeepSpeed >= 0.19.5)."""

    pp_degree: int
    tp_degree: int


class SubParamEntry(TypedDict):
    """One entry of ``parameter_with_sub_params`` (DeepSpeed's ``SubparamShape``)."""

    patterns: list[str]
    shape: list[int | list[int]]
    partition_dim: int


class UniversalCheckpointInfo(TypedDict, total=False):
    """``universal_checkpoint_info``: what ``ds_to_universal`` needs (every key optional to it)."""

    universal_checkpoint_version: float
    original_vocab_size: int
    padded_vocab_size: int
    vocabulary_parameter_patterns: list[str]
    pipeline_replicated_parameter_patterns: list[str]
    parameter_to_average_patterns: list[str]
    parameter_with_row_parallelism_patterns: list[str]
    tp_replicated_parameter_patterns: list[str]
    parameter_with_2_sub_params_cat_dim_0: list[str]
    parameter_with_sub_params: list[SubParamEntry]
    sub_param_shard_widths: dict[str, list[list[int]]]
    sub_params_shape: Any
    autotp_unsupported_parameter_patterns: dict[str, str]
    expert_parameter_patterns: list[str]
    affine_map: dict[str, Any]


class ModelStates(TypedDict):
    """A model-states file (``mp_rank_XX_model_states.pt``; ZeRO-3: one per rank)."""

    module: dict[str, Any] | None
    buffer_names: list[str]
    optimizer: dict[str, Any] | None
    param_shapes: list[dict[str, Any]] | None
    frozen_param_shapes: NotRequired[dict[str, Any] | None]
    shared_params: NotRequired[dict[str, str] | None]
    frozen_param_fragments: NotRequired[dict[str, Any] | None]
    lr_scheduler: Any
    data_sampler: NotRequired[Any]
    random_ltd: NotRequired[Any]
    sparse_tensor_module_names: NotRequired[Any]
    csr_tensor_module_names: NotRequired[Any]
    skipped_steps: int
    global_steps: int
    global_samples: NotRequired[int]
    dp_world_size: int
    mp_world_size: int
    checkpoint_parallel_dimensions: NotRequired[ParallelDimensions]
    ds_config: Any
    ds_version: str
    universal_checkpoint_info: NotRequired[UniversalCheckpointInfo]
    num_experts: NotRequired[list[int]]
    ds_autoep_layers: NotRequired[list[dict[str, Any]] | None]
    autoep_layers: NotRequired[list[dict[str, Any]] | None]
    folding: NotRequired[dict[str, Any]]


class OptimStatesFile(TypedDict):
    """A ZeRO optimizer-states file (``*zero_pp_rank_*_optim_states.pt``)."""

    optimizer_state_dict: dict[str, Any]
    ds_config: Any
    ds_version: str
    folding: NotRequired[dict[str, Any]]


class ZeroOptimizerState(TypedDict):
    """The optimizer state of ZeRO stages 1 and 2 (``DeepSpeedZeroOptimizer.state_dict``)."""

    loss_scaler: Any
    dynamic_loss_scale: bool
    overflow: bool
    clip_grad: float
    base_optimizer_state: Any
    base_optimizer_state_step: NotRequired[Any]
    single_partition_of_fp32_groups: list[Any]
    zero_stage: Any
    group_paddings: list[int]
    param_alignment_paddings: NotRequired[list[list[int]]]
    partition_count: int | list[int]
    ds_version: str
    param_slice_mappings: list[dict[str, Any]]
    universal_checkpoint_info: NotRequired[UniversalCheckpointInfo]


class BF16OptimizerState(TypedDict):
    """The optimizer state of DeepSpeed's ``BF16_Optimizer``: no ``zero_stage``."""

    clip_grad: float
    base_optimizer_state: Any
    single_partition_of_fp32_groups: list[Any]
    group_paddings: list[int]
    partition_count: int | list[int]
    ds_version: str
    param_slice_mappings: list[dict[str, Any]]
    universal_checkpoint_info: NotRequired[UniversalCheckpointInfo]


class Zero3OptimizerState(TypedDict):
    """The optimizer state of ZeRO stage 3 (``DeepSpeedZeroOptimizer_Stage3._rigid_state_dict``)."""

    zero_stage: Any
    loss_scaler: Any
    dynamic_loss_scale: bool
    overflow: bool
    partition_count: int | list[int]
    ds_zero_partition_groups: NotRequired[Any]
    optimizer_state_dict: dict[str, Any]
    fp32_flat_groups: list[Any]


class FP16WrapperState(TypedDict):
    """The ``optimizer`` of model states without ZeRO under fp16 (fused or unfused FP16 optimizer)."""

    dynamic_loss_scale: bool
    cur_scale: float
    cur_iter: int
    last_overflow_iter: NotRequired[int]
    scale_factor: NotRequired[float]
    scale_window: NotRequired[int]
    optimizer_state_dict: dict[str, Any]
    fp32_groups_flat: NotRequired[list[Any]]
    fp32_groups: NotRequired[list[list[Any]]]
    clip_grad: NotRequired[float]


class UniversalOptimizerState(TypedDict):
    """A universal checkpoint's ``zero/optimizer_state.pt``: the ZeRO state without its partitions."""

    loss_scaler: NotRequired[Any]
    dynamic_loss_scale: NotRequired[bool]
    overflow: NotRequired[bool]
    clip_grad: NotRequired[float]
    zero_stage: NotRequired[Any]
    group_paddings: NotRequired[list[int]]
    param_alignment_paddings: NotRequired[list[list[int]]]
    partition_count: NotRequired[int | list[int]]
    ds_version: NotRequired[str]
    ds_zero_partition_groups: NotRequired[Any]
    optimizer_state_dict: NotRequired[dict[str, Any]]
    """ZeRO-3 only: ds_to_universal keeps the first rank's optimizer state whole."""
    fp32_flat_groups: NotRequired[list[Any]]
    """ZeRO-3 only, as above."""
    param_groups: list[dict[str, Any]]


class UniversalParamFile(TypedDict):
    """A universal checkpoint's ``zero/<param>/<state>.pt`` when it holds a dict (ZeRO-3 may hold a bare tensor)."""

    param: Any
    cat_dim: NotRequired[int]
    param_n_sub_params: NotRequired[int]
    sub_param_shape: NotRequired[Any]
    vocab_tensor: NotRequired[bool]
    is_expert_param: NotRequired[bool]
    ep_num_experts: NotRequired[int]


# -- runtime specs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key of a dict DeepSpeed writes."""

    key: KeyGroup
    types: tuple[type, ...] = ()
    """Accepted types of the value (empty: anything); ``type(None)`` when it may be None."""
    required_from: str | None = "0.0.0"
    """The first DeepSpeed version that always writes it; ``None``: never required.

    For a key DeepSpeed added to a dict that existed before, this is the key's
    :attr:`~ckptkeys.KeyGroup.since`, taken from the registry (the one place it is written).
    """
    written_until: str | None = None
    """The last DeepSpeed version known to write it, for keys that were dropped."""


@dataclass(frozen=True, slots=True)
class DictKind:
    """A kind of dict: its schema and the key group its keys come from."""

    name: str
    group: type[KeyGroup]
    keys: tuple[KeySpec, ...]
    typed_dict: type
    open: bool = False
    """Other keys are expected (client_state merges into model states)."""


_N = type(None)
_OPTIONAL = None  # required_from for keys DeepSpeed writes only in some set-ups


def _k(key: KeyGroup, *types: type, required_from: str | None = "0.0.0", until: str | None = None) -> KeySpec:
    """A key every version writes (``required_from`` ``"0.0.0"``), or only some set-ups (``_OPTIONAL``).

    A version of its own is for a key whose first release the registry does not know; a key the
    registry dates is :func:`_added`, so that its version is written once.
    """
    if required_from not in ("0.0.0", _OPTIONAL) and key.since is not None:
        raise ValueError(f"{key.group.__name__}.{key.name} is dated {key.since} in the registry: use _added()")
    return KeySpec(key, types, required_from, until)


def _added(key: KeyGroup, *types: type) -> KeySpec:
    """A key written from the release that added it on: required from the registry's ``since``."""
    if key.since is None:
        raise ValueError(f"{key.group.__name__}.{key.name} has no since in the registry")
    return KeySpec(key, types, key.since)


M, F, OK = ModuleKeys, OptimFileKeys, OptimizerKeys

MODEL_STATES = DictKind(
    "model states",
    ModuleKeys,
    (
        _k(M.MODULE, dict, _N),
        _k(M.BUFFER_NAMES, list),
        _k(M.OPTIMIZER, dict, _N),
        _k(M.PARAM_SHAPES, list, _N),
        _added(M.FROZEN_PARAM_SHAPES, dict, _N),
        _k(M.SHARED_PARAMS, dict, _N, required_from=_OPTIONAL),
        _added(M.FROZEN_PARAM_FRAGMENTS, dict, _N),
        _k(M.LR_SCHEDULER),
        _k(M.DATA_SAMPLER, required_from=_OPTIONAL),
        _k(M.RANDOM_LTD, required_from=_OPTIONAL),
        _k(M.SPARSE_TENSOR_MODULE_NAMES, required_from=_OPTIONAL, until="0.14.4"),
        _k(M.CSR_TENSOR_MODULE_NAMES, required_from=_OPTIONAL),
        _k(M.SKIPPED_STEPS, int),
        _k(M.GLOBAL_STEPS, int),
        _k(M.GLOBAL_SAMPLES, int, required_from=_OPTIONAL),
        _k(M.DP_WORLD_SIZE, int),
        _k(M.MP_WORLD_SIZE, int),
        _added(M.CHECKPOINT_PARALLEL_DIMS, dict),
        _k(M.DS_CONFIG),
        _k(M.DS_VERSION, str),
        _k(M.UNIVERSAL_CHECKPOINT_INFO, dict, required_from=_OPTIONAL),
        _k(M.NUM_EXPERTS, list, required_from=_OPTIONAL),
        _k(M.AUTOEP_LAYERS_KEY, list, _N, required_from=_OPTIONAL),
        _k(M.AUTOEP_LAYERS_KEY_LEGACY, list, _N, required_from=_OPTIONAL),
        _k(M.FOLDING_METADATA_KEY, dict, required_from=_OPTIONAL),
    ),
    ModelStates,
    open=True,
)

OPTIM_STATES_FILE = DictKind(
    "optimizer-states file",
    OptimFileKeys,
    (
        _k(F.OPTIMIZER_STATE_DICT, dict),
        _k(F.DS_CONFIG),
        _k(F.DS_VERSION, str),
        _k(F.FOLDING, dict, required_from=_OPTIONAL),
    ),
    OptimStatesFile,
)

ZERO_OPTIMIZER_STATE = DictKind(
    "ZeRO-1/2 optimizer state",
    OptimizerKeys,
    (
        _k(OK.LOSS_SCALER),
        _k(OK.DYNAMIC_LOSS_SCALE, bool),
        _k(OK.OVERFLOW, bool),
        _k(OK.CLIP_GRAD, float, int),
        _k(OK.BASE_OPTIMIZER_STATE, dict, list),
        _k(OK.BASE_OPTIMIZER_STATE_STEP, required_from=_OPTIONAL),
        _k(OK.SINGLE_PARTITION_OF_FP32_GROUPS, list),
        _k(OK.ZERO_STAGE),
        _k(OK.GROUP_PADDINGS, list),
        # Present in 0.19.8 output, absent in 0.14 checkpoints; the release that added it is unrecorded.
        _k(OK.PARAM_ALIGNMENT_PADDINGS, list, required_from="0.19.8"),
        _k(OK.PARTITION_COUNT, int, list),
        _k(OK.DS_VERSION, str),
        _added(OK.PARAM_SLICE_MAPPINGS, list),
        _k(OK.UNIVERSAL_CHECKPOINT_INFO, dict, required_from=_OPTIONAL),
    ),
    ZeroOptimizerState,
)

BF16_OPTIMIZER_STATE = DictKind(
    "BF16-optimizer state",
    OptimizerKeys,
    (
        _k(OK.CLIP_GRAD, float, int),
        _k(OK.BASE_OPTIMIZER_STATE, dict, list),
        _k(OK.SINGLE_PARTITION_OF_FP32_GROUPS, list),
        _k(OK.GROUP_PADDINGS, list),
        _k(OK.PARTITION_COUNT, int, list),
        _k(OK.DS_VERSION, str),
        _k(OK.PARAM_SLICE_MAPPINGS, list),
        _k(OK.UNIVERSAL_CHECKPOINT_INFO, dict, required_from=_OPTIONAL),
    ),
    BF16OptimizerState,
)

ZERO3_OPTIMIZER_STATE = DictKind(
    "ZeRO-3 optimizer state",
    OptimizerKeys,
    (
        _k(OK.ZERO_STAGE),
        _k(OK.LOSS_SCALER),
        _k(OK.DYNAMIC_LOSS_SCALE, bool),
        _k(OK.OVERFLOW, bool),
        _k(OK.PARTITION_COUNT, int, list),
        _k(OK.DS_ZERO_PARTITION_GROUPS, required_from=_OPTIONAL),
        _k(OK.OPTIMIZER_STATE_DICT, dict),
        _k(OK.FP32_FLAT_GROUPS, list),
    ),
    Zero3OptimizerState,
)

FP16_WRAPPER_STATE = DictKind(
    "fp16 optimizer wrapper state",
    OptimizerKeys,
    (
        _k(OK.DYNAMIC_LOSS_SCALE, bool),
        _k(OK.CUR_SCALE, float, int),
        _k(OK.CUR_ITER, int),
        _k(OK.LAST_OVERFLOW_ITER, int, required_from=_OPTIONAL),
        _k(OK.SCALE_FACTOR, float, int, required_from=_OPTIONAL),
        _k(OK.SCALE_WINDOW, int, required_from=_OPTIONAL),
        _k(OK.OPTIMIZER_STATE_DICT, dict),
        _k(OK.FP32_GROUPS_FLAT, list, required_from=_OPTIONAL),
        _k(OK.FP32_GROUPS, list, required_from=_OPTIONAL),
        _k(OK.CLIP_GRAD, float, int, required_from=_OPTIONAL),
    ),
    FP16WrapperState,
)

UNIVERSAL_INFO = DictKind(
    "universal_checkpoint_info",
    UniversalKeys,
    (
        _k(UniversalKeys.UNIVERSAL_CHECKPOINT_VERSION_KEY, float, int, required_from=_OPTIONAL),
        _k(VocabKeys.ORIGINAL_VOCAB_SIZE, int, required_from=_OPTIONAL),
        _k(VocabKeys.PADDED_VOCAB_SIZE, int, required_from=_OPTIONAL),
        *(
            _k(key, list, required_from=_OPTIONAL)
            for key in (
                ParamPatternKeys.VOCABULARY_PARAMETER_PATTERNS,
                ParamPatternKeys.PIPELINE_REPLICATED_PARAMETER_PATTERNS,
                ParamPatternKeys.PARAMETER_TO_AVERAGE_PATTERNS,
                ParamPatternKeys.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
                ParamPatternKeys.TP_REPLICATED_PARAMETER_PATTERNS,
                ParamPatternKeys.PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0,
                ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS,
                ParamPatternKeys.EXPERT_PARAMETER_PATTERNS,
            )
        ),
        _k(ParamPatternKeys.SUB_PARAM_SHARD_WIDTHS, dict, required_from=_OPTIONAL),
        _k(ParamPatternKeys.SUB_PARAMS_SHAPE, required_from=_OPTIONAL),
        _k(UniversalKeys.AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS, dict, required_from=_OPTIONAL),
        _k(UniversalKeys.AFFINE_MAP, dict, required_from=_OPTIONAL),
    ),
    UniversalCheckpointInfo,
)

UNIVERSAL_OPTIMIZER_STATE = DictKind(
    "universal optimizer state",
    OptimizerKeys,
    (
        _k(OK.LOSS_SCALER, required_from=_OPTIONAL),
        _k(OK.DYNAMIC_LOSS_SCALE, bool, required_from=_OPTIONAL),
        _k(OK.OVERFLOW, bool, required_from=_OPTIONAL),
        _k(OK.CLIP_GRAD, float, int, required_from=_OPTIONAL),
        _k(OK.ZERO_STAGE, required_from=_OPTIONAL),
        _k(OK.GROUP_PADDINGS, list, required_from=_OPTIONAL),
        _k(OK.PARAM_ALIGNMENT_PADDINGS, list, required_from=_OPTIONAL),
        _k(OK.PARTITION_COUNT, int, list, required_from=_OPTIONAL),
        _k(OK.DS_VERSION, str, required_from=_OPTIONAL),
        _k(OK.DS_ZERO_PARTITION_GROUPS, required_from=_OPTIONAL),
        _k(OK.OPTIMIZER_STATE_DICT, dict, required_from=_OPTIONAL),
        _k(OK.FP32_FLAT_GROUPS, list, required_from=_OPTIONAL),
        _k(OK.PARAM_GROUPS, list),
    ),
    UniversalOptimizerState,
)

UNIVERSAL_PARAM_FILE = DictKind(
    "universal parameter file",
    UniversalParamKeys,
    (
        _k(UniversalParamKeys.PARAM),
        _k(UniversalParamKeys.CAT_DIM, int, required_from=_OPTIONAL),
        _k(UniversalParamKeys.PARAM_N_SUB_PARAMS, int, required_from=_OPTIONAL),
        _k(UniversalParamKeys.SUB_PARAM_SHAPE, required_from=_OPTIONAL),
        _k(UniversalParamKeys.VOCAB_TENSOR, bool, required_from=_OPTIONAL),
        _k(UniversalParamKeys.EP_IS_EXPERT_PARAM, bool, required_from=_OPTIONAL),
        _k(UniversalParamKeys.EP_NUM_EXPERTS, int, required_from=_OPTIONAL),
    ),
    UniversalParamFile,
)

PARALLEL_DIMENSIONS = DictKind(
    "checkpoint_parallel_dimensions",
    ParallelDimsKeys,
    (_k(ParallelDimsKeys.CHECKPOINT_PP_DEGREE, int), _k(ParallelDimsKeys.CHECKPOINT_TP_DEGREE, int)),
    ParallelDimensions,
)

SUB_PARAM_ENTRY = DictKind(
    "parameter_with_sub_params entry",
    SubParamKeys,
    (_k(SubParamKeys.PATTERNS, list), _k(SubParamKeys.SHAPE, list, tuple), _k(SubParamKeys.PARTITION_DIM, int)),
    SubParamEntry,
)

SPECS: tuple[DictKind, ...] = (
    MODEL_STATES,
    OPTIM_STATES_FILE,
    ZERO_OPTIMIZER_STATE,
    BF16_OPTIMIZER_STATE,
    ZERO3_OPTIMIZER_STATE,
    FP16_WRAPPER_STATE,
    UNIVERSAL_INFO,
    UNIVERSAL_OPTIMIZER_STATE,
    UNIVERSAL_PARAM_FILE,
    PARALLEL_DIMENSIONS,
    SUB_PARAM_ENTRY,
)
"""Every dict kind, with its keys."""


def spec_for(name: str) -> DictKind:
    """The dict kind called ``name`` (``"model states"``, ``"ZeRO-3 optimizer state"``, ...)."""
    for kind in SPECS:
        if kind.name == name:
            return kind
    raise KeyError(name)


def optimizer_state_kind(state: dict[Any, Any]) -> DictKind:
    """Which optimizer wrote ``state`` (an ``optimizer_state_dict`` of an optimizer-states file)."""
    if OptimizerKeys.FP32_FLAT_GROUPS in state:
        return ZERO3_OPTIMIZER_STATE
    if OptimizerKeys.SINGLE_PARTITION_OF_FP32_GROUPS in state:
        if OptimizerKeys.ZERO_STAGE in state or OptimizerKeys.LOSS_SCALER in state:
            return ZERO_OPTIMIZER_STATE
        return BF16_OPTIMIZER_STATE
    if OptimizerKeys.CUR_SCALE in state:
        return FP16_WRAPPER_STATE
    return ZERO_OPTIMIZER_STATE
