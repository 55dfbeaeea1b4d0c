"""ckptkeys.naming: every name DeepSpeed writes, both ways."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckptkeys import NamingKeys, naming
from ckptkeys.naming import CheckpointName, FileKind

from .conftest import FIXTURES

K = FileKind


def test_fixture_names() -> None:
    expected = {
        "mp_rank_00_model_states.pt": CheckpointName(K.MODEL_STATES, mp_rank=0),
        "mp_rank_01_model_states.pt": CheckpointName(K.MODEL_STATES, mp_rank=1),
        "zero_pp_rank_1_mp_rank_00_model_states.pt": CheckpointName(K.ZERO3_MODEL_STATES, mp_rank=0, dp_rank=1),
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt": CheckpointName(
            K.OPTIM_STATES, mp_rank=0, dp_rank=1, precision="bf16"
        ),
        "zero_pp_rank_0_mp_rank_00_optim_states.pt": CheckpointName(K.OPTIM_STATES, mp_rank=0, dp_rank=0, precision=""),
        "layer_03-model_states.pt": CheckpointName(K.LAYER_MODEL_STATES, layer=3),
        "layer_0_expert_1_mp_rank_00_model_states.pt": CheckpointName(
            K.EXPERT_MODEL_STATES, layer=0, expert=1, mp_rank=0
        ),
        "global_step3_universal/zero/fc1.weight/exp_avg_sq.pt": CheckpointName(
            K.UNIVERSAL_PARAM_STATE, param="fc1.weight", state="exp_avg_sq"
        ),
        "global_step3_universal/zero/optimizer_state.pt": CheckpointName(K.UNIVERSAL_OPTIMIZER_STATE),
        "latest": CheckpointName(K.LATEST),
        "latest_universal": CheckpointName(K.LATEST_UNIVERSAL),
    }
    for name, record in expected.items():
        assert naming.parse(name) == record, name
    found = set()
    for path in FIXTURES.rglob("*"):
        if path.is_file() and path.name != "README.md":
            relative = path.relative_to(FIXTURES)
            parsed = naming.parse(relative)
            assert parsed is not None, relative
            assert str(relative).replace(os.sep, "/").endswith(parsed.path)
            found.add(parsed.kind)
    assert found == set(FileKind) - {K.EXPERT_OPTIM_STATES, K.RECOVERY_SCRIPT}


def test_constructors_write_deepspeeds_names() -> None:
    assert naming.model_states() == "mp_rank_00_model_states.pt"
    assert naming.model_states(12) == "mp_rank_12_model_states.pt"
    assert naming.model_states(123) == "mp_rank_123_model_states.pt"
    assert naming.zero3_model_states(10, 1) == "zero_pp_rank_10_mp_rank_01_model_states.pt"
    assert naming.optim_states(3) == "zero_pp_rank_3_mp_rank_00_optim_states.pt"
    assert naming.optim_states(3, 1, "bf16") == "bf16_zero_pp_rank_3_mp_rank_01_optim_states.pt"
    assert naming.layer_model_states(3) == "layer_03-model_states.pt"
    assert naming.layer_model_states(12, 1) == "layer_12-model_01-model_states.pt"
    assert naming.expert_model_states(1, 0, layer=0) == "layer_0_expert_1_mp_rank_00_model_states.pt"
    assert naming.expert_model_states(5) == "expert_5_mp_rank_00_model_states.pt"
    assert naming.expert_optim_states(2) == "expp_rank_2_mp_rank_00_optim_states.pt"
    for name in (naming.model_states(), naming.optim_states(0, 0, "fp16")):
        assert type(name) is str


def test_legacy_and_lenient_spellings() -> None:
    legacy = naming.parse("bf16_zero_pp_rank_2_mp_rank_00optim_states.pt")
    assert legacy == CheckpointName(K.OPTIM_STATES, mp_rank=0, dp_rank=2, precision="bf16", legacy=True)
    assert legacy.path == "bf16_zero_pp_rank_2_mp_rank_00optim_states.pt"
    # DeepSpeed's readers accept these; the record keeps the numbers, build writes the canonical name.
    assert naming.parse("mp_rank_5_model_states.pt") == CheckpointName(K.MODEL_STATES, mp_rank=5)
    lenient = naming.parse("zero_pp_rank_01_mp_rank_00_optim_states.pt")
    assert lenient is not None and lenient.dp_rank == 1
    assert lenient.path == "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    assert naming.parse(r"tag\zero\fc1.weight\fp32.pt") == CheckpointName(
        K.UNIVERSAL_PARAM_STATE, param="fc1.weight", state="fp32"
    )
    assert naming.parse("zero/zero/fp32.pt") == CheckpointName(K.UNIVERSAL_PARAM_STATE, param="zero", state="fp32")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "model.safetensors",
        "pytorch_model.bin",
        "mp_rank_00_model_states.ptx",
        "mp_rank__model_states.pt",
        "zero_pp_rank_x_mp_rank_00_optim_states.pt",
        "bf32_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "layer_3-model_states.ptt",
        "expp_rank_0_optim_states.pt",
        "fc1.weight/fp32.pt",
        "zero/fp32.pt",
        "zero/../fp32.pt",
        "latest.txt",
        "Latest",
        "mp_rank_٣_model_states.pt",  # a non-ASCII digit
    ],
)
def test_foreign_names(name: str) -> None:
    assert naming.parse(name) is None


def test_names_come_from_the_registry() -> None:
    assert naming.model_states().startswith(NamingKeys.MODEL_FILE_PREFIX)
    assert naming.optim_states(0).endswith(NamingKeys.OPTIM_FILE_SUFFIX)
    assert naming.build(CheckpointName(K.LATEST)) == NamingKeys.LATEST


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (CheckpointName(K.MODEL_STATES), "need a mp_rank"),
        (CheckpointName(K.MODEL_STATES, mp_rank=-1), "non-negative int"),
        (CheckpointName(K.MODEL_STATES, mp_rank=True), "non-negative int"),
        (CheckpointName(K.MODEL_STATES, mp_rank=0, dp_rank=1), "have no dp_rank"),
        (CheckpointName(K.OPTIM_STATES, mp_rank=0, dp_rank=0), "need a precision"),
        (CheckpointName(K.OPTIM_STATES, mp_rank=0, dp_rank=0, precision="fp8"), "precision must be one of"),
        (CheckpointName(K.MODEL_STATES, mp_rank=0, legacy=True), "no legacy spelling"),
        (CheckpointName(K.EXPERT_MODEL_STATES, expert=0, mp_rank=0), "unless it is the legacy spelling"),
        (CheckpointName(K.UNIVERSAL_PARAM_STATE, param="a/b", state="fp32"), "without '/'"),
        (CheckpointName(K.UNIVERSAL_PARAM_STATE, param="", state="fp32"), "non-empty"),
        (CheckpointName(K.UNIVERSAL_PARAM_STATE, param="w"), "need a state"),
        (CheckpointName(K.LATEST, mp_rank=0), "have no mp_rank"),
    ],
)
def test_invalid_records(record: CheckpointName, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        naming.build(record)


ranks = st.integers(0, 5000)
param_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,12}(\.[A-Za-z0-9_\-]{1,8}){0,4}", fullmatch=True)
state_names = st.sampled_from(["fp32", "exp_avg", "exp_avg_sq", "step", "momentum_buffer"]) | param_names

records = st.one_of(
    st.builds(CheckpointName, st.just(K.MODEL_STATES), mp_rank=ranks),
    st.builds(CheckpointName, st.just(K.ZERO3_MODEL_STATES), mp_rank=ranks, dp_rank=ranks),
    st.builds(
        CheckpointName,
        st.just(K.OPTIM_STATES),
        mp_rank=ranks,
        dp_rank=ranks,
        precision=st.sampled_from(naming.PRECISIONS),
        legacy=st.booleans(),
    ),
    st.builds(CheckpointName, st.just(K.LAYER_MODEL_STATES), layer=ranks, mp_rank=st.none() | ranks),
    st.builds(CheckpointName, st.just(K.EXPERT_MODEL_STATES), layer=ranks, expert=ranks, mp_rank=ranks),
    st.builds(CheckpointName, st.just(K.EXPERT_MODEL_STATES), expert=ranks, mp_rank=ranks, legacy=st.just(True)),
    st.builds(CheckpointName, st.just(K.EXPERT_OPTIM_STATES), ep_rank=ranks, mp_rank=ranks),
    st.builds(CheckpointName, st.just(K.UNIVERSAL_PARAM_STATE), param=param_names, state=state_names),
    st.sampled_from(
        [CheckpointName(k) for k in (K.UNIVERSAL_OPTIMIZER_STATE, K.LATEST, K.LATEST_UNIVERSAL, K.RECOVERY_SCRIPT)]
    ),
)


@given(records)
def test_parse_inverts_build(record: CheckpointName) -> None:
    name = naming.build(record)
    assert naming.parse(name) == record
    assert naming.build(naming.parse(name)) == name  # type: ignore[arg-type]
    assert naming.parse("some/tag/" + name) == record


@given(st.text(max_size=80))
def test_parse_never_raises(text: str) -> None:
    record = naming.parse(text)
    if record is not None:
        naming.build(record)  # whatever parses is a valid record


@pytest.mark.deepspeed
def test_deepspeeds_own_helpers_agree() -> None:
    pytest.importorskip("torch")
    utils = pytest.importorskip("deepspeed.checkpoint.utils")
    assert utils.get_model_ckpt_name_for_rank("/c", "00") == "/c/" + naming.model_states(0)
    assert utils.get_zero_ckpt_name_for_rank("/c", 3, 1) == "/c/" + naming.optim_states(3, 1)
