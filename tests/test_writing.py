"""ckptkeys.writing: the universal_checkpoint_info builder (CI type-checks the docs example: tests/doc_examples.py)."""

from __future__ import annotations

import io
import pickle
import re

import pytest

from ckptkeys import UniversalKeys, validate
from ckptkeys.writing import InvalidInfoError, SubParam, client_state, universal_checkpoint_info


def test_defaults() -> None:
    info = universal_checkpoint_info()
    assert info["universal_checkpoint_version"] == 0.4
    assert all(type(k) is str for k in info)
    assert validate(dict(info), kind="universal_checkpoint_info") == []


def test_full_info_is_plain_data() -> None:
    info = universal_checkpoint_info(
        original_vocab_size=50257,
        padded_vocab_size=50304,
        vocabulary_parameter_patterns=[r"word_embeddings\.weight"],
        tp_replicated_parameter_patterns=[r".*layernorm"],
        parameter_with_row_parallelism_patterns=[r".*dense_4h_to_h\.weight"],
        parameter_with_sub_params=[SubParam([r".*query_key_value\.weight"], ((64, 32, 32), 128), 0)],
        sub_param_shard_widths={r".*query_key_value\.weight": [[32, 32], [16, 16], [16, 16]]},
        expert_parameter_patterns=[r".*\.experts\.w[123]$"],
    )
    assert info["parameter_with_sub_params"] == [
        {"patterns": [r".*query_key_value\.weight"], "shape": [[64, 32, 32], 128], "partition_dim": 0}
    ]
    assert b"ckptkeys" not in pickle.dumps(info)  # nothing of ours in a saved checkpoint
    assert validate(dict(info), kind="universal_checkpoint_info") == []
    state = client_state(info, my_note="x")
    assert list(state) == [UniversalKeys.UNIVERSAL_CHECKPOINT_INFO.value, "my_note"]
    assert type(next(iter(state))) is str


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 0.5}, "version 0.5 is not one DeepSpeed writes"),
        ({"version": True}, "is not one DeepSpeed writes"),
        (
            {"tp_replicated_parameter_patterns": ["fc(1"]},
            "tp_replicated_parameter_patterns: pattern 'fc(1' does not compile",
        ),
        ({"tp_replicated_parameter_patterns": "fc1"}, "must be a list of regex strings"),
        ({"parameter_to_average_patterns": ["a", "a"]}, "appear twice"),
        ({"original_vocab_size": 0}, "original_vocab_size must be a positive int"),
        ({"original_vocab_size": 100, "padded_vocab_size": 50}, "smaller than original_vocab_size"),
        ({"parameter_with_sub_params": [SubParam(["w"], (3, 8), 0)]}, "needs the sub-parameters' sizes"),
        ({"parameter_with_sub_params": [SubParam(["w"], ((4, 4), 8), 2)]}, "is not a dim of"),
        ({"parameter_with_sub_params": [SubParam(["w"], ((4, 4), 8), 0)]}, "has no widths for"),
        (
            {
                "parameter_with_sub_params": [SubParam(["w"], ((4, 4), 8), 0)],
                "sub_param_shard_widths": {"w": [[2, 2], [3, 2]]},
            },
            "sum to 5, the sub-parameter is 4",
        ),
        ({"sub_param_shard_widths": {"x": [[1]]}}, "is not a pattern of parameter_with_sub_params"),
        ({"version": 0.3, "sub_param_shard_widths": {"x": [[1]]}}, "needs version >= 0.4"),
    ],
)
def test_invalid(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInfoError, match=re.escape(message)):
        universal_checkpoint_info(**kwargs)  # type: ignore[arg-type]


def test_legacy_versions_take_counts() -> None:
    info = universal_checkpoint_info(version=0.3, parameter_with_sub_params=[SubParam(["w"], (3, 8), 0)])
    assert "sub_param_shard_widths" not in info


def test_torch_weights_only_round_trip() -> None:
    torch = pytest.importorskip("torch")
    info = universal_checkpoint_info(tp_replicated_parameter_patterns=[r"fc\d\.bias"])
    buffer = io.BytesIO()
    torch.save(client_state(info), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {"universal_checkpoint_info": info}
