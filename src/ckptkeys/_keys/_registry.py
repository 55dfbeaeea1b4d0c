"""The key registry: every key and name part of a DeepSpeed checkpoint, one group per kind of dict.

Values match DeepSpeed 0.19.8 byte for byte. A member that stands for a constant of
``deepspeed.checkpoint.constants`` carries that constant's name (``deepspeed_name``); the
others are strings DeepSpeed writes as literals. One string can be a key in several dicts
(``"ds_version"``, ``"ep_size"``), so it can be a member of several groups, but never twice
in one group: every group is ``@unique``.
"""

from __future__ import annotations

import enum

from .._errors import UnknownKeyError
from ._strenum import KeyGroup

TYPE_CHECKING = False  # typing costs milliseconds to import; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

__all__ = [
    "AUTOEP_PLACEMENT_VERSION",
    "AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION",
    "AUTOEP_ZERO12_REQUIRED_FIELDS",
    "FOLDING_METADATA_VERSION",
    "GROUPS",
    "UNIVERSAL_CHECKPOINT_VERSION_VALUE",
    "AffineMapKeys",
    "AutoEPKeys",
    "AutoEPParamKeys",
    "AutoEPPlacementKeys",
    "FoldingKeys",
    "LossScalerKeys",
    "ModuleKeys",
    "NamingKeys",
    "OptimFileKeys",
    "OptimizerKeys",
    "ParallelDimsKeys",
    "ParamAttrKeys",
    "ParamPatternKeys",
    "SubParamKeys",
    "UniversalKeys",
    "UniversalParamKeys",
    "UniversalStateKeys",
    "VocabKeys",
    "iter_members",
    "member_for_constant",
    "members_for",
]


def _const(value: str, description: str, since: str | None) -> tuple[str, str, str | None, bool]:
    """A member that stands for the DeepSpeed constant of the same name."""
    return (value, description, since, True)


def _lit(value: str, description: str, since: str | None = None) -> tuple[str, str, str | None, bool]:
    """A member for a string DeepSpeed writes as a literal (or a second home of a constant's value)."""
    return (value, description, since, False)


@enum.unique
class OptimizerKeys(KeyGroup):
    """Keys of the optimizer state DeepSpeed saves.

    That dict is ``optimizer_state_dict`` in ``*_optim_states.pt`` (ZeRO-1/2, ZeRO-3, BF16
    optimizer), ``optimizer`` in ``mp_rank_*_model_states.pt`` without ZeRO (fp16 wrappers),
    and the universal checkpoint's ``zero/optimizer_state.pt``.
    """

    OPTIMIZER_STATE_DICT = _const(
        "optimizer_state_dict",
        "The wrapped torch optimizer's state_dict (ZeRO-3 and fp16 wrappers); also the outer key of *_optim_states.pt.",
        "0.6.0",
    )
    FP32_GROUPS = _const(
        "fp32_groups",
        "fp32 master copies per param group, unfused FP16 optimizer (list of lists of tensors).",
        "0.6.0",
    )
    FP32_FLAT_GROUPS = _const(
        "fp32_flat_groups", "ZeRO-3: this rank's flat fp32 partition per param group (list of tensors).", "0.6.0"
    )
    BASE_OPTIMIZER_STATE = _const(
        "base_optimizer_state",
        "ZeRO-1/2 and BF16: the base torch optimizer's state_dict (or, elastic, a list per group).",
        "0.6.0",
    )
    BASE_OPTIMIZER_STATE_STEP = _const(
        "base_optimizer_state_step", "Elastic ZeRO-1/2 checkpoints: the optimizer step count.", "0.11.0"
    )
    SINGLE_PARTITION_OF_FP32_GROUPS = _const(
        "single_partition_of_fp32_groups",
        "ZeRO-1/2 and BF16: this rank's flat fp32 partition per param group, padding removed.",
        "0.6.0",
    )
    PARAM_GROUPS = _const(
        "param_groups",
        "Optimizer param groups (hyper-parameters and param ids); written to universal zero/optimizer_state.pt.",
        "0.14.1",
    )
    GROUP_PADDINGS = _const(
        "group_paddings", "ZeRO-1/2 and BF16: padding elements at the end of each group's flat partition.", "0.7.0"
    )
    PARAM_ALIGNMENT_PADDINGS = _const(
        "param_alignment_paddings",
        "ZeRO-1/2: per group, the alignment padding after each parameter (absent in 0.14 checkpoints).",
        None,
    )
    PARTITION_COUNT = _const(
        "partition_count",
        "Number of data-parallel partitions (an int, or a list per param group); zero_to_fp32's world size.",
        "0.6.0",
    )
    ZERO_STAGE = _const(
        "zero_stage", "The ZeRO stage as a pickled ZeroStageEnum (absent in BF16-optimizer state).", "0.6.0"
    )
    CLIP_GRAD = _const("clip_grad", "Gradient clipping threshold (float).", "0.6.2")
    LOSS_SCALER = _const("loss_scaler", "The pickled LossScaler or DynamicLossScaler object.", "0.11.2")
    PARAM_SLICE_MAPPINGS = _const(
        "param_slice_mappings",
        "ZeRO-1/2 and BF16: per group, OrderedDict param name -> fragment_address(numel, start) in the partition.",
        "0.7.0",
    )
    DYNAMIC_LOSS_SCALE = _lit("dynamic_loss_scale", "Whether the loss scale is dynamic (bool).")
    OVERFLOW = _lit("overflow", "Whether the last step overflowed (bool).")
    DS_VERSION = _lit("ds_version", "Version of DeepSpeed that wrote the optimizer state (str).")
    UNIVERSAL_CHECKPOINT_INFO = _lit(
        "universal_checkpoint_info", "AutoTP: the universal-checkpoint info dict, written beside the state."
    )
    DS_ZERO_PARTITION_GROUPS = _lit(
        "ds_zero_partition_groups", "ZeRO-3 with custom partition groups: the partition group layout."
    )
    CUR_SCALE = _lit("cur_scale", "fp16 wrappers: the current loss scale.")
    CUR_ITER = _lit("cur_iter", "fp16 wrappers: the iteration counter of the loss scaler.")
    LAST_OVERFLOW_ITER = _lit("last_overflow_iter", "fp16 wrappers, dynamic scale: the iteration of the last overflow.")
    SCALE_FACTOR = _lit("scale_factor", "fp16 wrappers, dynamic scale: the factor the scale changes by.")
    SCALE_WINDOW = _lit("scale_window", "fp16 wrappers, dynamic scale: overflow-free steps before the scale grows.")
    FP32_GROUPS_FLAT = _lit("fp32_groups_flat", "Fused FP16 optimizer: one flat fp32 master tensor per param group.")


@enum.unique
class ModuleKeys(KeyGroup):
    """Top-level keys of a model-states file (``mp_rank_*_model_states.pt``; ZeRO-3: ``zero_pp_rank_*``)."""

    MODULE = _lit("module", "The model's state_dict (None under the pipeline engine, which writes layer_* files).")
    BUFFER_NAMES = _const("buffer_names", "Names of the model's buffers (list of str).", "0.6.0")
    OPTIMIZER = _lit(
        "optimizer", "The optimizer's state_dict without ZeRO (fp16 wrapper or torch optimizer), else None."
    )
    PARAM_SHAPES = _const(
        "param_shapes",
        "ZeRO: per param group, OrderedDict name -> torch.Size in flat-buffer order; else None.",
        "0.6.0",
    )
    FROZEN_PARAM_SHAPES = _const(
        "frozen_param_shapes", "ZeRO stage >= 2: OrderedDict frozen param name -> torch.Size, else None.", "0.9.1"
    )
    FROZEN_PARAM_FRAGMENTS = _const(
        "frozen_param_fragments", "ZeRO stage >= 2: OrderedDict frozen param name -> this rank's fragment.", "0.9.1"
    )
    SHARED_PARAMS = _lit("shared_params", "ZeRO: dict of tied parameter name -> the name of the parameter it shares.")
    LR_SCHEDULER = _lit("lr_scheduler", "The learning-rate scheduler's state_dict, or None.")
    DATA_SAMPLER = _lit("data_sampler", "The DeepSpeed data sampler's state_dict, or None.")
    RANDOM_LTD = _lit("random_ltd", "The random layer-token-drop scheduler's state_dict, or None.")
    SPARSE_TENSOR_MODULE_NAMES = _lit(
        "sparse_tensor_module_names", "Names of modules with sparse gradients (written by DeepSpeed 0.14 and older)."
    )
    CSR_TENSOR_MODULE_NAMES = _lit(
        "csr_tensor_module_names", "Legacy name of sparse_tensor_module_names; still read on load."
    )
    SKIPPED_STEPS = _lit("skipped_steps", "Steps skipped because of overflow (int).")
    GLOBAL_STEPS = _lit("global_steps", "Optimizer steps taken (int); the default tag is global_step{global_steps}.")
    GLOBAL_SAMPLES = _lit("global_samples", "Training samples consumed (int).")
    DP_WORLD_SIZE = _lit("dp_world_size", "Data-parallel world size at save time (int).")
    MP_WORLD_SIZE = _lit("mp_world_size", "Model-parallel world size at save time (int).")
    CHECKPOINT_PARALLEL_DIMS = _const(
        "checkpoint_parallel_dimensions", "Dict of the pipeline and tensor parallel degrees at save time.", "0.19.5"
    )
    DS_CONFIG = _lit("ds_config", "The DeepSpeed config the engine was given (dict, or a path).")
    DS_VERSION = _const("ds_version", "Version of DeepSpeed that wrote the checkpoint (str).", "0.6.0")
    UNIVERSAL_CHECKPOINT_INFO = _lit(
        "universal_checkpoint_info", "Dict that ds_to_universal requires: version, pattern lists, vocabulary sizes."
    )
    NUM_EXPERTS = _lit("num_experts", "MoE: list with the number of experts of each MoE layer.")
    AUTOEP_LAYERS_KEY = _const(
        "ds_autoep_layers", "MoE: list of per-layer AutoEP metadata dicts, or None without AutoEP.", "0.19.2"
    )
    AUTOEP_LAYERS_KEY_LEGACY = _const("autoep_layers", "Older name of ds_autoep_layers, still read on load.", "0.19.2")
    FOLDING_METADATA_KEY = _const(
        "folding", "AutoEP with AutoTP: the folding metadata dict (also in the optimizer-states file).", "0.19.3"
    )


@enum.unique
class OptimFileKeys(KeyGroup):
    """Top-level keys of a ZeRO optimizer-states file (``*zero_pp_rank_*_optim_states.pt``)."""

    OPTIMIZER_STATE_DICT = _lit("optimizer_state_dict", "The ZeRO optimizer's state dict; see OptimizerKeys.")
    DS_CONFIG = _lit("ds_config", "The DeepSpeed config the engine was given.")
    DS_VERSION = _lit("ds_version", "Version of DeepSpeed that wrote the file.")
    FOLDING = _lit("folding", "AutoEP with AutoTP: the folding metadata dict.")


@enum.unique
class LossScalerKeys(KeyGroup):
    """Attributes of a pickled ``LossScaler`` / ``DynamicLossScaler`` (the object under ``loss_scaler``)."""

    CUR_SCALE = _lit("cur_scale", "The current loss scale.")
    DYNAMIC = _lit("dynamic", "True for DynamicLossScaler, False for a static LossScaler.")
    CUR_ITER = _lit("cur_iter", "Dynamic: iterations seen.")
    LAST_OVERFLOW_ITER = _lit("last_overflow_iter", "Dynamic: iteration of the last overflow (-1 if none).")
    SCALE_FACTOR = _lit("scale_factor", "Dynamic: factor the scale is divided or multiplied by.")
    SCALE_WINDOW = _lit("scale_window", "Dynamic: overflow-free iterations before the scale grows.")
    MIN_SCALE = _lit("min_scale", "Dynamic: the lowest scale allowed.")
    DELAYED_SHIFT = _lit("delayed_shift", "Dynamic: hysteresis, overflows tolerated before the scale drops.")
    CUR_HYSTERESIS = _lit("cur_hysteresis", "Dynamic: overflows still tolerated.")
    CONSECUTIVE_HYSTERESIS = _lit("consecutive_hysteresis", "Dynamic: whether hysteresis resets on a good step.")
    RAISE_ERROR_AT_MIN_SCALE = _lit("raise_error_at_min_scale", "Dynamic: raise instead of going below min_scale.")
    DTYPE = _lit("dtype", "Dynamic: the training dtype the scaler was made for.")


@enum.unique
class NamingKeys(KeyGroup):
    """Parts of the file and folder names of a checkpoint (see ``ckptkeys.naming``)."""

    MODEL_FILE_PREFIX = _const("mp_rank_", "Prefix of a model-states file, followed by the 2-digit mp rank.", "0.7.0")
    ZERO_FILE_PREFIX = _const(
        "zero_pp_rank_", "Prefix of ZeRO shard files, followed by the (unpadded) data-parallel rank.", "0.7.0"
    )
    OPTIM_FILE_SUFFIX = _const("_optim_states.pt", "Suffix of an optimizer-states file.", "0.7.0")
    MODEL_FILE_SUFFIX = _const("_model_states.pt", "Suffix of a model-states file.", "0.7.0")
    LAYER_FILE_PREFIX = _const("layer_", "Prefix of pipeline layer files and MoE expert files.", "0.7.0")
    BF16_ZERO_FILE_PREFIX = _const(
        "bf16_zero_pp_rank_", "Prefix of ZeRO optimizer shards written by any bf16 run.", "0.7.0"
    )
    FP16_ZERO_FILE_PREFIX = _const(
        "fp16_zero_pp_rank_", "Prefix of fp16 ZeRO optimizer shards; searched for on load, never written.", "0.7.4"
    )
    LEGACY_OPTIM_FILE_SUFFIX = _lit(
        "optim_states.pt",
        "Old optimizer-states suffix without the underscore (..._mp_rank_00optim_states.pt); load only.",
    )
    PIPELINE_MODEL_FILE_SUFFIX = _lit("-model_states.pt", "Suffix of a pipeline layer file (layer_03-model_states.pt).")
    PIPELINE_MODEL_INFIX = _lit("-model_", "Separates a pipeline layer index from its mp rank (layer_03-model_00-...).")
    MP_RANK_INFIX = _lit("_mp_rank_", "Separates a data-parallel, expert or expert-parallel rank from the mp rank.")
    EXPERT_INFIX = _lit("_expert_", "Separates the MoE layer id from the expert id (layer_0_expert_1_...).")
    EXPERT_FILE_PREFIX = _lit("expert_", "Prefix of legacy MoE expert files without a layer id.")
    EXPERT_PARALLEL_FILE_PREFIX = _lit(
        "expp_rank_", "Prefix of MoE optimizer files without ZeRO, followed by the expert-parallel rank."
    )
    BF16_PREFIX = _lit("bf16_", "Precision prefix of bf16 ZeRO optimizer shards.")
    FP16_PREFIX = _lit("fp16_", "Precision prefix DeepSpeed's readers accept for fp16 ZeRO optimizer shards.")
    CHECKPOINT_FILE_EXTENSION = _lit(".pt", "Extension of every checkpoint file.")
    LATEST = _lit("latest", "File in the save folder holding the tag of the latest checkpoint (no newline).")
    LATEST_UNIVERSAL = _lit("latest_universal", "File naming the latest universal checkpoint folder.")
    DEFAULT_TAG_PREFIX = _lit("global_step", "Prefix of the default tag, followed by the global step.")
    UNIVERSAL_ZERO_FOLDER = _lit("zero", "Folder of a universal checkpoint with one sub-folder per parameter.")
    UNIVERSAL_OPTIMIZER_STATE_FILE = _lit(
        "optimizer_state.pt", "File in a universal checkpoint's zero/ folder with the optimizer's shared state."
    )
    RECOVERY_SCRIPT = _lit("zero_to_fp32.py", "Copy of DeepSpeed's conversion script in the save folder.")


@enum.unique
class ParallelDimsKeys(KeyGroup):
    """Keys of the ``checkpoint_parallel_dimensions`` dict in model states."""

    CHECKPOINT_PP_DEGREE = _const("pp_degree", "Pipeline-parallel degree at save time.", "0.19.5")
    CHECKPOINT_TP_DEGREE = _const("tp_degree", "Tensor-parallel degree at save time.", "0.19.5")


@enum.unique
class UniversalKeys(KeyGroup):
    """The ``universal_checkpoint_info`` dict: its own key and its bookkeeping keys.

    Its pattern lists are :class:`ParamPatternKeys`, its vocabulary sizes :class:`VocabKeys`.
    """

    UNIVERSAL_CHECKPOINT_INFO = _const(
        "universal_checkpoint_info",
        "Key of the info dict ds_to_universal requires, in model states (or AutoTP optimizer state).",
        "0.7.4",
    )
    UNIVERSAL_CHECKPOINT_VERSION_KEY = _const(
        "universal_checkpoint_version",
        "Version of the info format (float; 0.4 enables sub_param_shard_widths).",
        "0.7.4",
    )
    AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS = _const(
        "autotp_unsupported_parameter_patterns",
        "Dict pattern -> reason for parameters AutoTP cannot convert; non-empty makes ds_to_universal fail.",
        None,
    )
    AFFINE_MAP = _const("affine_map", "Per-pattern geometric sharding description, beside the pattern lists.", None)


@enum.unique
class VocabKeys(KeyGroup):
    """Vocabulary-padding keys: sizes in ``universal_checkpoint_info``, a flag in universal parameter files."""

    VOCAB_TENSOR = _const(
        "vocab_tensor", "Universal parameter file: True if the tensor is a padded vocabulary.", "0.12.3"
    )
    PADDED_VOCAB_SIZE = _const("padded_vocab_size", "Vocabulary size after padding (Megatron).", "0.7.4")
    ORIGINAL_VOCAB_SIZE = _const(
        "original_vocab_size", "Vocabulary size before padding; rows beyond it are dropped on conversion.", "0.7.4"
    )


@enum.unique
class ParamPatternKeys(KeyGroup):
    """Regex lists in ``universal_checkpoint_info`` that tell ``ds_to_universal`` how to merge a parameter.

    Patterns are applied with ``re.match`` (anchored at the start, not at the end).
    """

    VOCABULARY_PARAMETER_PATTERNS = _const(
        "vocabulary_parameter_patterns", "Parameters holding a padded vocabulary.", "0.7.4"
    )
    PIPELINE_REPLICATED_PARAMETER_PATTERNS = _const(
        "pipeline_replicated_parameter_patterns", "Parameters replicated across pipeline stages.", "0.7.4"
    )
    PARAMETER_TO_AVERAGE_PATTERNS = _const(
        "parameter_to_average_patterns", "Parameters averaged, not concatenated, across tensor-parallel ranks.", "0.7.4"
    )
    PARAMETER_WITH_ROW_PARALLELISM_PATTERNS = _const(
        "parameter_with_row_parallelism_patterns", "Row-parallel parameters, concatenated on dim 1.", "0.7.4"
    )
    TP_REPLICATED_PARAMETER_PATTERNS = _const(
        "tp_replicated_parameter_patterns", "Parameters replicated across tensor-parallel ranks.", "0.11.2"
    )
    PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0 = _const(
        "parameter_with_2_sub_params_cat_dim_0", "Parameters made of two sub-parameters stacked on dim 0.", "0.12.4"
    )
    PARAMETER_WITH_SUB_PARAMS = _const(
        "parameter_with_sub_params", "List of {patterns, shape, partition_dim} for fused sub-parameters.", "0.14.1"
    )
    SUB_PARAM_SHARD_WIDTHS = _const(
        "sub_param_shard_widths", "Dict pattern -> per-rank widths of uneven sub-parameter shards (version 0.4).", None
    )
    SUB_PARAMS_SHAPE = _const("sub_params_shape", "Shape of the sub-parameters (unused inside DeepSpeed).", "0.14.1")
    EXPERT_PARAMETER_PATTERNS = _const(
        "expert_parameter_patterns", "MoE expert parameters (e.g. r'.*\\.experts\\.w[123]$').", "0.19.2"
    )


@enum.unique
class SubParamKeys(KeyGroup):
    """Keys of one entry of ``parameter_with_sub_params`` (DeepSpeed's ``SubparamShape``)."""

    PATTERNS = _lit("patterns", "Regexes of the parameters this entry describes.")
    SHAPE = _lit("shape", "Shape of the fused parameter, with a tuple of sub-sizes on the partition dim.")
    PARTITION_DIM = _lit("partition_dim", "The dimension split across tensor-parallel ranks.")


@enum.unique
class UniversalParamKeys(KeyGroup):
    """Keys of a universal checkpoint's per-parameter files, ``zero/<param>/<state>.pt``."""

    PARAM = _const("param", "The merged full tensor.", "0.7.3")
    CAT_DIM = _const("cat_dim", "Dimension the tensor-parallel slices were concatenated on (int).", "0.7.3")
    PARAM_N_SUB_PARAMS = _const("param_n_sub_params", "Number of stacked sub-parameters (default 1).", "0.12.4")
    SUB_PARAM_SHAPE = _const("sub_param_shape", "The pickled SubparamShape of a fused parameter.", "0.14.1")
    VOCAB_TENSOR = _lit("vocab_tensor", "True if the tensor is a padded vocabulary.", "0.12.3")
    EP_IS_EXPERT_PARAM = _const("is_expert_param", "True for an MoE expert parameter.", "0.19.2")
    EP_NUM_EXPERTS = _const("ep_num_experts", "Number of experts merged into an expert parameter.", "0.19.2")


@enum.unique
class UniversalStateKeys(KeyGroup):
    """Optimizer-state names of a universal checkpoint, the stems of ``zero/<param>/<state>.pt``."""

    FP32_WEIGHT_KEY = _const("fp32", "The fp32 master weights (fp32.pt).", "0.7.0")
    EXP_AVG = _lit("exp_avg", "Adam's first moment (exp_avg.pt).")
    EXP_AVG_SQ = _lit("exp_avg_sq", "Adam's second moment (exp_avg_sq.pt).")
    STEP = _lit("step", "The optimizer step (step.pt), written when the optimizer state has one.")


@enum.unique
class ParamAttrKeys(KeyGroup):
    """Attribute names DeepSpeed sets on ``torch.nn.Parameter`` objects for universal conversion."""

    DS_AUTOTP_UC_META = _const(
        "ds_autotp_universal_checkpoint_meta", "AutoTP: how a parameter was sliced, for universal conversion.", "0.18.9"
    )
    DS_AUTOEP_UC_META = _const(
        "ds_autoep_uc_meta", "AutoEP: a dict of AutoEPParamKeys describing an expert parameter.", None
    )


@enum.unique
class AutoEPKeys(KeyGroup):
    """Keys of one per-layer entry of ``ds_autoep_layers`` in MoE model states."""

    AUTOEP_EXPERT_KEY_PREFIX = _const("expert_key_prefix", "State-dict prefix of the layer's expert weights.", "0.19.5")
    AUTOEP_NUM_EXPERTS = _const("num_experts", "Total experts in the layer.", "0.19.5")
    AUTOEP_NUM_LOCAL_EXPERTS = _const("num_local_experts", "Experts held by one expert-parallel rank.", "0.19.5")
    AUTOEP_EP_SIZE = _const("ep_size", "Expert-parallel degree of the layer.", "0.19.5")
    AUTOEP_EXPERT_PLACEMENT = _const(
        "expert_placement", "Dict of AutoEPPlacementKeys: which rank holds which experts.", None
    )
    AUTOEP_AFFINE_MAPS = _const("affine_maps", "Affine maps of the layer's expert parameters.", None)
    AUTOEP_ZERO3_EXPERT_STATE_FORMAT_KEY = _const(
        "checkpoint_format",
        "ZeRO-3: how expert state is stored; see AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT.",
        "0.19.3",
    )
    AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT = _const(
        "zero3_partitioned", "The value of checkpoint_format for ZeRO-3 partitioned expert state.", "0.19.3"
    )
    AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION_KEY = _const(
        "checkpoint_format_version", "ZeRO-3: version of the expert state format (int).", "0.19.3"
    )
    MOE_LAYER_ID = _lit("moe_layer_id", "Index of the MoE layer in the model.")
    MODULE_PATH = _lit("module_path", "Dotted path of the MoE module in the model.")
    EP_GROUP_NAME = _lit("ep_group_name", "ZeRO-3 partitioned: name of the expert-parallel process group.")
    EP_RANK = _lit("ep_rank", "ZeRO-3 partitioned: this rank's expert-parallel rank.")
    EXPERT_DATA_PARALLEL_RANK = _lit("expert_data_parallel_rank", "ZeRO-3 partitioned: rank in the expert-data group.")
    EXPERT_DATA_PARALLEL_WORLD_SIZE = _lit(
        "expert_data_parallel_world_size", "ZeRO-3 partitioned: size of the expert-data-parallel group."
    )
    GLOBAL_EXPERT_START = _lit("global_expert_start", "ZeRO-3 partitioned: first global expert id held here.")
    GLOBAL_EXPERT_END = _lit("global_expert_end", "ZeRO-3 partitioned: one past the last global expert id held here.")


@enum.unique
class AutoEPPlacementKeys(KeyGroup):
    """Keys of an AutoEP ``expert_placement`` dict and of its per-rank entries."""

    AUTOEP_PLACEMENT_VERSION_KEY = _const("version", "Version of the placement format (int).", None)
    AUTOEP_PLACEMENT_NUM_EXPERTS = _const("num_experts", "Total experts placed.", None)
    AUTOEP_PLACEMENT_EP_SIZE = _const("ep_size", "Expert-parallel degree.", None)
    AUTOEP_PLACEMENT_RANKS = _const("ranks", "List of per-rank entries.", None)
    AUTOEP_PLACEMENT_RANK = _const("rank", "Per-rank entry: the expert-parallel rank.", None)
    AUTOEP_PLACEMENT_EXPERTS = _const("experts", "Per-rank entry: the global expert ids it holds.", None)


@enum.unique
class AutoEPParamKeys(KeyGroup):
    """Keys of the per-parameter AutoEP dict stored in the ``ds_autoep_uc_meta`` attribute."""

    AUTOEP_PARAM_LOGICAL_SHAPE = _const("logical_shape", "Shape of the parameter over all experts.", None)
    AUTOEP_PARAM_EP_RANK = _const("ep_rank", "Expert-parallel rank that holds this slice.", None)
    AUTOEP_PARAM_LOCAL_EXPERTS = _const("local_experts", "Global ids of the experts in this slice.", None)


@enum.unique
class AffineMapKeys(KeyGroup):
    """Keys of an ``affine_map`` dict."""

    AFFINE_MAP_VERSION = _const("version", "Version of the affine-map format.", None)
    AFFINE_MAP_PARAMS = _const("params", "The map's per-parameter entries.", None)


@enum.unique
class FoldingKeys(KeyGroup):
    """Keys of the ``folding`` dict (AutoEP with AutoTP) in model and optimizer states."""

    FOLDING_TP_SIZE = _const("tp_size", "Tensor-parallel degree.", "0.19.3")
    FOLDING_TP_RANK = _const("tp_rank", "Tensor-parallel rank.", "0.19.3")
    FOLDING_EP_SIZE = _const("ep_size", "Expert-parallel degree.", "0.19.3")
    FOLDING_EP_RANK = _const("ep_rank", "Expert-parallel rank.", "0.19.3")
    FOLDING_ETP_SIZE = _const("etp_size", "Expert tensor-parallel degree.", "0.19.3")
    FOLDING_ETP_RANK = _const("etp_rank", "Expert tensor-parallel rank.", "0.19.3")
    FOLDING_ZERO_PARTITION_GROUP = _const("zero_partition_group", "Name of the ZeRO partition group.", "0.19.3")
    FOLDING_ZERO_PARTITION_RANK = _const("zero_partition_rank", "Rank in the ZeRO partition group.", "0.19.3")
    FOLDING_ZERO_PARTITION_COUNT = _const("zero_partition_count", "Size of the ZeRO partition group.", "0.19.3")
    FOLDING_DISPATCH_STRATEGY = _const("dispatch_strategy", "How tokens are dispatched to experts.", "0.19.3")
    FOLDING_SHARED_EXPERT_PLACEMENT = _const("shared_expert_placement", "Where shared experts live.", "0.19.3")
    FOLDING_FAMILY = _const("family", "Parameter family of an entry.", "0.19.3")
    FOLDING_PARAM_FAMILIES = _const("param_families", "Dict of parameter name -> family.", "0.19.3")


GROUPS: Final[tuple[type[KeyGroup], ...]] = (
    ModuleKeys,
    OptimFileKeys,
    OptimizerKeys,
    LossScalerKeys,
    NamingKeys,
    ParallelDimsKeys,
    UniversalKeys,
    VocabKeys,
    ParamPatternKeys,
    SubParamKeys,
    UniversalParamKeys,
    UniversalStateKeys,
    ParamAttrKeys,
    AutoEPKeys,
    AutoEPPlacementKeys,
    AutoEPParamKeys,
    AffineMapKeys,
    FoldingKeys,
)
"""Every key group, in reference order."""

# Non-string constants of deepspeed.checkpoint.constants 0.19.8.
UNIVERSAL_CHECKPOINT_VERSION_VALUE: Final = 0.4
"""The universal-checkpoint info version DeepSpeed writes (float; compared with ``>=``)."""
AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION: Final = 1
"""The value of ``checkpoint_format_version`` for ZeRO-3 partitioned AutoEP expert state."""
AUTOEP_PLACEMENT_VERSION: Final = 1
"""The value of ``version`` in an AutoEP ``expert_placement`` dict."""
FOLDING_METADATA_VERSION: Final = 1
"""The version of the ``folding`` metadata format."""
AUTOEP_ZERO12_REQUIRED_FIELDS: Final[tuple[AutoEPKeys, ...]] = (
    AutoEPKeys.AUTOEP_EXPERT_KEY_PREFIX,
    AutoEPKeys.AUTOEP_NUM_EXPERTS,
    AutoEPKeys.AUTOEP_NUM_LOCAL_EXPERTS,
    AutoEPKeys.AUTOEP_EP_SIZE,
)
"""The per-layer AutoEP keys ZeRO-1/2 loading requires."""


def _index() -> dict[str, tuple[KeyGroup, ...]]:
    index: dict[str, list[KeyGroup]] = {}
    for group in GROUPS:
        for member in group:
            index.setdefault(member._value_, []).append(member)
    return {value: tuple(members) for value, members in index.items()}


_BY_VALUE: Final = _index()
_BY_CONSTANT: Final = {
    member.deepspeed_name: member for group in GROUPS for member in group if member.deepspeed_name is not None
}


def members_for(value: object) -> tuple[KeyGroup, ...]:
    """Every member, across all groups, whose value is ``value`` (empty if none).

    One string can be a key of several dicts: ``members_for("ds_version")`` returns
    ``ModuleKeys.DS_VERSION``, ``OptimFileKeys.DS_VERSION`` and ``OptimizerKeys.DS_VERSION``.
    """
    if not isinstance(value, str):
        return ()
    return _BY_VALUE.get(value, ())


def iter_members() -> Iterator[KeyGroup]:
    """Every member of every group, group by group in :data:`GROUPS` order."""
    for group in GROUPS:
        yield from group


def member_for_constant(name: object) -> KeyGroup:
    """The member that stands for the ``deepspeed.checkpoint.constants`` string constant ``name``.

    Raises :class:`~ckptkeys.UnknownKeyError` (a ``ValueError``) for a name that is not a
    string constant of DeepSpeed 0.19.8, naming the closest constants.
    """
    member = _BY_CONSTANT.get(name) if isinstance(name, str) else None
    if member is None:
        import difflib  # only on this error path

        close = difflib.get_close_matches(str(name), list(_BY_CONSTANT), n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownKeyError(f"{name!r} is not a string constant of deepspeed.checkpoint.constants{hint}")
    return member
