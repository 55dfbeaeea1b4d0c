"""A hand-built universal_checkpoint_info with a wrong key or a wrong value type is an error."""

from ckptkeys.schema import UniversalCheckpointInfo

good: UniversalCheckpointInfo = {"universal_checkpoint_version": 0.4, "tp_replicated_parameter_patterns": ["x"]}
typo: UniversalCheckpointInfo = {"universal_checkpoint_versoin": 0.4}  # E: Extra key "universal_checkpoint_versoin"
wrong: UniversalCheckpointInfo = {"original_vocab_size": "50257"}  # E: Incompatible types (expression has type "str"
