"""Drop-in replacement for ``deepspeed.checkpoint.constants`` (DeepSpeed 0.19.8).

Every name has DeepSpeed's value and type: plain ``str`` (not enum members), so ``repr``,
pickling and serialisation are unchanged for legacy callers. Each is ``Final``, so mypy
sees its literal type. New code should use the key groups (``ckptkeys.OptimizerKeys``, ...).

Generated from the registry by ``python scripts/regen.py``; a test fails when it is stale.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would triple this module's import time
if TYPE_CHECKING:
    from typing import Final as _Final
del TYPE_CHECKING

__all__ = [
    "AFFINE_MAP",
    "AFFINE_MAP_PARAMS",
    "AFFINE_MAP_VERSION",
    "AUTOEP_AFFINE_MAPS",
    "AUTOEP_EP_SIZE",
    "AUTOEP_EXPERT_KEY_PREFIX",
    "AUTOEP_EXPERT_PLACEMENT",
    "AUTOEP_LAYERS_KEY",
    "AUTOEP_LAYERS_KEY_LEGACY",
    "AUTOEP_NUM_EXPERTS",
    "AUTOEP_NUM_LOCAL_EXPERTS",
    "AUTOEP_PARAM_EP_RANK",
    "AUTOEP_PARAM_LOCAL_EXPERTS",
    "AUTOEP_PARAM_LOGICAL_SHAPE",
    "AUTOEP_PLACEMENT_EP_SIZE",
    "AUTOEP_PLACEMENT_EXPERTS",
    "AUTOEP_PLACEMENT_NUM_EXPERTS",
    "AUTOEP_PLACEMENT_RANK",
    "AUTOEP_PLACEMENT_RANKS",
    "AUTOEP_PLACEMENT_VERSION",
    "AUTOEP_PLACEMENT_VERSION_KEY",
    "AUTOEP_ZERO12_REQUIRED_FIELDS",
    "AUTOEP_ZERO3_EXPERT_STATE_FORMAT_KEY",
    "AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION",
    "AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION_KEY",
    "AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT",
    "AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS",
    "BASE_OPTIMIZER_STATE",
    "BASE_OPTIMIZER_STATE_STEP",
    "BF16_ZERO_FILE_PREFIX",
    "BUFFER_NAMES",
    "CAT_DIM",
    "CHECKPOINT_PARALLEL_DIMS",
    "CHECKPOINT_PP_DEGREE",
    "CHECKPOINT_TP_DEGREE",
    "CLIP_GRAD",
    "DS_AUTOEP_UC_META",
    "DS_AUTOTP_UC_META",
    "DS_VERSION",
    "EP_IS_EXPERT_PARAM",
    "EP_NUM_EXPERTS",
    "EXPERT_PARAMETER_PATTERNS",
    "FOLDING_DISPATCH_STRATEGY",
    "FOLDING_EP_RANK",
    "FOLDING_EP_SIZE",
    "FOLDING_ETP_RANK",
    "FOLDING_ETP_SIZE",
    "FOLDING_FAMILY",
    "FOLDING_METADATA_KEY",
    "FOLDING_METADATA_VERSION",
    "FOLDING_PARAM_FAMILIES",
    "FOLDING_SHARED_EXPERT_PLACEMENT",
    "FOLDING_TP_RANK",
    "FOLDING_TP_SIZE",
    "FOLDING_ZERO_PARTITION_COUNT",
    "FOLDING_ZERO_PARTITION_GROUP",
    "FOLDING_ZERO_PARTITION_RANK",
    "FP16_ZERO_FILE_PREFIX",
    "FP32_FLAT_GROUPS",
    "FP32_GROUPS",
    "FP32_WEIGHT_KEY",
    "FROZEN_PARAM_FRAGMENTS",
    "FROZEN_PARAM_SHAPES",
    "GROUP_PADDINGS",
    "LAYER_FILE_PREFIX",
    "LOSS_SCALER",
    "MODEL_FILE_PREFIX",
    "MODEL_FILE_SUFFIX",
    "OPTIMIZER_STATE_DICT",
    "OPTIM_FILE_SUFFIX",
    "ORIGINAL_VOCAB_SIZE",
    "PADDED_VOCAB_SIZE",
    "PARAM",
    "PARAMETER_TO_AVERAGE_PATTERNS",
    "PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0",
    "PARAMETER_WITH_ROW_PARALLELISM_PATTERNS",
    "PARAMETER_WITH_SUB_PARAMS",
    "PARAM_ALIGNMENT_PADDINGS",
    "PARAM_GROUPS",
    "PARAM_N_SUB_PARAMS",
    "PARAM_SHAPES",
    "PARAM_SLICE_MAPPINGS",
    "PARTITION_COUNT",
    "PIPELINE_REPLICATED_PARAMETER_PATTERNS",
    "SINGLE_PARTITION_OF_FP32_GROUPS",
    "SUB_PARAMS_SHAPE",
    "SUB_PARAM_SHAPE",
    "SUB_PARAM_SHARD_WIDTHS",
    "TP_REPLICATED_PARAMETER_PATTERNS",
    "UNIVERSAL_CHECKPOINT_INFO",
    "UNIVERSAL_CHECKPOINT_VERSION_KEY",
    "UNIVERSAL_CHECKPOINT_VERSION_VALUE",
    "VOCABULARY_PARAMETER_PATTERNS",
    "VOCAB_TENSOR",
    "ZERO_FILE_PREFIX",
    "ZERO_STAGE",
]


# ckptkeys.ModuleKeys
BUFFER_NAMES: _Final = 'buffer_names'
"Names of the model's buffers (list of str)."
PARAM_SHAPES: _Final = 'param_shapes'
'ZeRO: per param group, OrderedDict name -> torch.Size in flat-buffer order; else None.'
FROZEN_PARAM_SHAPES: _Final = 'frozen_param_shapes'
'ZeRO stage >= 2: OrderedDict frozen param name -> torch.Size, else None.'
FROZEN_PARAM_FRAGMENTS: _Final = 'frozen_param_fragments'
"ZeRO stage >= 2: OrderedDict frozen param name -> this rank's fragment."
CHECKPOINT_PARALLEL_DIMS: _Final = 'checkpoint_parallel_dimensions'
'Dict of the pipeline and tensor parallel degrees at save time.'
DS_VERSION: _Final = 'ds_version'
'Version of DeepSpeed that wrote the checkpoint (str).'
AUTOEP_LAYERS_KEY: _Final = 'ds_autoep_layers'
'MoE: list of per-layer AutoEP metadata dicts, or None without AutoEP.'
AUTOEP_LAYERS_KEY_LEGACY: _Final = 'autoep_layers'
'Older name of ds_autoep_layers, still read on load.'
FOLDING_METADATA_KEY: _Final = 'folding'
'AutoEP with AutoTP: the folding metadata dict (also in the optimizer-states file).'

# ckptkeys.OptimizerKeys
OPTIMIZER_STATE_DICT: _Final = 'optimizer_state_dict'
"The wrapped torch optimizer's state_dict (ZeRO-3 and fp16 wrappers); also the outer key of *_optim_states.pt."
FP32_GROUPS: _Final = 'fp32_groups'
'fp32 master copies per param group, unfused FP16 optimizer (list of lists of tensors).'
FP32_FLAT_GROUPS: _Final = 'fp32_flat_groups'
"ZeRO-3: this rank's flat fp32 partition per param group (list of tensors)."
BASE_OPTIMIZER_STATE: _Final = 'base_optimizer_state'
"ZeRO-1/2 and BF16: the base torch optimizer's state_dict (or, elastic, a list per group)."
BASE_OPTIMIZER_STATE_STEP: _Final = 'base_optimizer_state_step'
'Elastic ZeRO-1/2 checkpoints: the optimizer step count.'
SINGLE_PARTITION_OF_FP32_GROUPS: _Final = 'single_partition_of_fp32_groups'
"ZeRO-1/2 and BF16: this rank's flat fp32 partition per param group, padding removed."
PARAM_GROUPS: _Final = 'param_groups'
'Optimizer param groups (hyper-parameters and param ids); written to universal zero/optimizer_state.pt.'
GROUP_PADDINGS: _Final = 'group_paddings'
"ZeRO-1/2 and BF16: padding elements at the end of each group's flat partition."
PARAM_ALIGNMENT_PADDINGS: _Final = 'param_alignment_paddings'
'ZeRO-1/2: per group, the alignment padding after each parameter (absent in 0.14 checkpoints).'
PARTITION_COUNT: _Final = 'partition_count'
"Number of data-parallel partitions (an int, or a list per param group); zero_to_fp32's world size."
ZERO_STAGE: _Final = 'zero_stage'
'The ZeRO stage as a pickled ZeroStageEnum (absent in BF16-optimizer state).'
CLIP_GRAD: _Final = 'clip_grad'
'Gradient clipping threshold (float).'
LOSS_SCALER: _Final = 'loss_scaler'
'The pickled LossScaler or DynamicLossScaler object.'
PARAM_SLICE_MAPPINGS: _Final = 'param_slice_mappings'
'ZeRO-1/2 and BF16: per group, OrderedDict param name -> fragment_address(numel, start) in the partition.'

# ckptkeys.NamingKeys
MODEL_FILE_PREFIX: _Final = 'mp_rank_'
'Prefix of a model-states file, followed by the 2-digit mp rank.'
ZERO_FILE_PREFIX: _Final = 'zero_pp_rank_'
'Prefix of ZeRO shard files, followed by the (unpadded) data-parallel rank.'
OPTIM_FILE_SUFFIX: _Final = '_optim_states.pt'
'Suffix of an optimizer-states file.'
MODEL_FILE_SUFFIX: _Final = '_model_states.pt'
'Suffix of a model-states file.'
LAYER_FILE_PREFIX: _Final = 'layer_'
'Prefix of pipeline layer files and MoE expert files.'
BF16_ZERO_FILE_PREFIX: _Final = 'bf16_zero_pp_rank_'
'Prefix of ZeRO optimizer shards written by any bf16 run.'
FP16_ZERO_FILE_PREFIX: _Final = 'fp16_zero_pp_rank_'
'Prefix of fp16 ZeRO optimizer shards; searched for on load, never written.'

# ckptkeys.ParallelDimsKeys
CHECKPOINT_PP_DEGREE: _Final = 'pp_degree'
'Pipeline-parallel degree at save time.'
CHECKPOINT_TP_DEGREE: _Final = 'tp_degree'
'Tensor-parallel degree at save time.'

# ckptkeys.UniversalKeys
UNIVERSAL_CHECKPOINT_INFO: _Final = 'universal_checkpoint_info'
'Key of the info dict ds_to_universal requires, in model states (or AutoTP optimizer state).'
UNIVERSAL_CHECKPOINT_VERSION_KEY: _Final = 'universal_checkpoint_version'
'Version of the info format (float; 0.4 enables sub_param_shard_widths).'
AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS: _Final = 'autotp_unsupported_parameter_patterns'
'Dict pattern -> reason for parameters AutoTP cannot convert; non-empty makes ds_to_universal fail.'
AFFINE_MAP: _Final = 'affine_map'
'Per-pattern geometric sharding description, beside the pattern lists.'

# ckptkeys.VocabKeys
VOCAB_TENSOR: _Final = 'vocab_tensor'
'Universal parameter file: True if the tensor is a padded vocabulary.'
PADDED_VOCAB_SIZE: _Final = 'padded_vocab_size'
'Vocabulary size after padding (Megatron).'
ORIGINAL_VOCAB_SIZE: _Final = 'original_vocab_size'
'Vocabulary size before padding; rows beyond it are dropped on conversion.'

# ckptkeys.ParamPatternKeys
VOCABULARY_PARAMETER_PATTERNS: _Final = 'vocabulary_parameter_patterns'
'Parameters holding a padded vocabulary.'
PIPELINE_REPLICATED_PARAMETER_PATTERNS: _Final = 'pipeline_replicated_parameter_patterns'
'Parameters replicated across pipeline stages.'
PARAMETER_TO_AVERAGE_PATTERNS: _Final = 'parameter_to_average_patterns'
'Parameters averaged, not concatenated, across tensor-parallel ranks.'
PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: _Final = 'parameter_with_row_parallelism_patterns'
'Row-parallel parameters, concatenated on dim 1.'
TP_REPLICATED_PARAMETER_PATTERNS: _Final = 'tp_replicated_parameter_patterns'
'Parameters replicated across tensor-parallel ranks.'
PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0: _Final = 'parameter_with_2_sub_params_cat_dim_0'
'Parameters made of two sub-parameters stacked on dim 0.'
PARAMETER_WITH_SUB_PARAMS: _Final = 'parameter_with_sub_params'
'List of {patterns, shape, partition_dim} for fused sub-parameters.'
SUB_PARAM_SHARD_WIDTHS: _Final = 'sub_param_shard_widths'
'Dict pattern -> per-rank widths of uneven sub-parameter shards (version 0.4).'
SUB_PARAMS_SHAPE: _Final = 'sub_params_shape'
'Shape of the sub-parameters (unused inside DeepSpeed).'
EXPERT_PARAMETER_PATTERNS: _Final = 'expert_parameter_patterns'
"MoE expert parameters (e.g. r'.*\\.experts\\.w[123]$')."

# ckptkeys.UniversalParamKeys
PARAM: _Final = 'param'
'The merged full tensor.'
CAT_DIM: _Final = 'cat_dim'
'Dimension the tensor-parallel slices were concatenated on (int).'
PARAM_N_SUB_PARAMS: _Final = 'param_n_sub_params'
'Number of stacked sub-parameters (default 1).'
SUB_PARAM_SHAPE: _Final = 'sub_param_shape'
'The pickled SubparamShape of a fused parameter.'
EP_IS_EXPERT_PARAM: _Final = 'is_expert_param'
'True for an MoE expert parameter.'
EP_NUM_EXPERTS: _Final = 'ep_num_experts'
'Number of experts merged into an expert parameter.'

# ckptkeys.UniversalStateKeys
FP32_WEIGHT_KEY: _Final = 'fp32'
'The fp32 master weights (fp32.pt).'

# ckptkeys.ParamAttrKeys
DS_AUTOTP_UC_META: _Final = 'ds_autotp_universal_checkpoint_meta'
'AutoTP: how a parameter was sliced, for universal conversion.'
DS_AUTOEP_UC_META: _Final = 'ds_autoep_uc_meta'
'AutoEP: a dict of AutoEPParamKeys describing an expert parameter.'

# ckptkeys.AutoEPKeys
AUTOEP_EXPERT_KEY_PREFIX: _Final = 'expert_key_prefix'
"State-dict prefix of the layer's expert weights."
AUTOEP_NUM_EXPERTS: _Final = 'num_experts'
'Total experts in the layer.'
AUTOEP_NUM_LOCAL_EXPERTS: _Final = 'num_local_experts'
'Experts held by one expert-parallel rank.'
AUTOEP_EP_SIZE: _Final = 'ep_size'
'Expert-parallel degree of the layer.'
AUTOEP_EXPERT_PLACEMENT: _Final = 'expert_placement'
'Dict of AutoEPPlacementKeys: which rank holds which experts.'
AUTOEP_AFFINE_MAPS: _Final = 'affine_maps'
"Affine maps of the layer's expert parameters."
AUTOEP_ZERO3_EXPERT_STATE_FORMAT_KEY: _Final = 'checkpoint_format'
'ZeRO-3: how expert state is stored; see AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT.'
AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT: _Final = 'zero3_partitioned'
'The value of checkpoint_format for ZeRO-3 partitioned expert state.'
AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION_KEY: _Final = 'checkpoint_format_version'
'ZeRO-3: version of the expert state format (int).'

# ckptkeys.AutoEPPlacementKeys
AUTOEP_PLACEMENT_VERSION_KEY: _Final = 'version'
'Version of the placement format (int).'
AUTOEP_PLACEMENT_NUM_EXPERTS: _Final = 'num_experts'
'Total experts placed.'
AUTOEP_PLACEMENT_EP_SIZE: _Final = 'ep_size'
'Expert-parallel degree.'
AUTOEP_PLACEMENT_RANKS: _Final = 'ranks'
'List of per-rank entries.'
AUTOEP_PLACEMENT_RANK: _Final = 'rank'
'Per-rank entry: the expert-parallel rank.'
AUTOEP_PLACEMENT_EXPERTS: _Final = 'experts'
'Per-rank entry: the global expert ids it holds.'

# ckptkeys.AutoEPParamKeys
AUTOEP_PARAM_LOGICAL_SHAPE: _Final = 'logical_shape'
'Shape of the parameter over all experts.'
AUTOEP_PARAM_EP_RANK: _Final = 'ep_rank'
'Expert-parallel rank that holds this slice.'
AUTOEP_PARAM_LOCAL_EXPERTS: _Final = 'local_experts'
'Global ids of the experts in this slice.'

# ckptkeys.AffineMapKeys
AFFINE_MAP_VERSION: _Final = 'version'
'Version of the affine-map format.'
AFFINE_MAP_PARAMS: _Final = 'params'
"The map's per-parameter entries."

# ckptkeys.FoldingKeys
FOLDING_TP_SIZE: _Final = 'tp_size'
'Tensor-parallel degree.'
FOLDING_TP_RANK: _Final = 'tp_rank'
'Tensor-parallel rank.'
FOLDING_EP_SIZE: _Final = 'ep_size'
'Expert-parallel degree.'
FOLDING_EP_RANK: _Final = 'ep_rank'
'Expert-parallel rank.'
FOLDING_ETP_SIZE: _Final = 'etp_size'
'Expert tensor-parallel degree.'
FOLDING_ETP_RANK: _Final = 'etp_rank'
'Expert tensor-parallel rank.'
FOLDING_ZERO_PARTITION_GROUP: _Final = 'zero_partition_group'
'Name of the ZeRO partition group.'
FOLDING_ZERO_PARTITION_RANK: _Final = 'zero_partition_rank'
'Rank in the ZeRO partition group.'
FOLDING_ZERO_PARTITION_COUNT: _Final = 'zero_partition_count'
'Size of the ZeRO partition group.'
FOLDING_DISPATCH_STRATEGY: _Final = 'dispatch_strategy'
'How tokens are dispatched to experts.'
FOLDING_SHARED_EXPERT_PLACEMENT: _Final = 'shared_expert_placement'
'Where shared experts live.'
FOLDING_FAMILY: _Final = 'family'
'Parameter family of an entry.'
FOLDING_PARAM_FAMILIES: _Final = 'param_families'
'Dict of parameter name -> family.'

# Non-string constants
UNIVERSAL_CHECKPOINT_VERSION_VALUE: _Final = 0.4
AUTOEP_ZERO12_REQUIRED_FIELDS: _Final = ('expert_key_prefix', 'num_experts', 'num_local_experts', 'ep_size')
AUTOEP_ZERO3_EXPERT_STATE_FORMAT_VERSION: _Final = 1
AUTOEP_PLACEMENT_VERSION: _Final = 1
FOLDING_METADATA_VERSION: _Final = 1
