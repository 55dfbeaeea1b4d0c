"""A misspelt member is an error."""

from ckptkeys import (
    OptimizerKeys,
    UniversalKeys,
)

OptimizerKeys.FP32_GROUP  # E: "type[OptimizerKeys]" has no attribute "FP32_GROUP"
UniversalKeys.UNIVERSAL_CHECKPOINT_INF  # E: has no attribute "UNIVERSAL_CHECKPOINT_INF"
x: int = OptimizerKeys.ZERO_STAGE  # E: Incompatible types in assignment
y: OptimizerKeys = UniversalKeys.UNIVERSAL_CHECKPOINT_INFO  # E: Incompatible types in assignment
