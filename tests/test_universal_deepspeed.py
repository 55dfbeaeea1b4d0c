"""ckptkeys universal against DeepSpeed's own ds_to_universal, file for file (needs torch and DeepSpeed).

Every tag folder of a DeepSpeed checkpoint in tests/data (the fixtures, the framework client
saves, ZeRO-0, the damaged ones, universal tags), with and without ``--inject_missing_state``:
``ds_to_universal`` 0.19.8 (``main()`` of ``python -m deepspeed.checkpoint.ds_to_universal
--input_folder T --output_folder O --num_extract_workers 1 --num_merge_workers 1``, in this
process: the same code without 1.5 s of imports per run, run once per session) either converts
it, and then ``ckptkeys.universal`` writes the same universal tag (tests/universal_compare.py),
or refuses it, and then ckptkeys refuses it for the same reason. What DeepSpeed does on each
folder is recorded in ``DEEPSPEED`` below, as measured by running it, and checked again here.
Where the two part (DeepSpeed converts files that disagree with each other, crashes on MoE,
or is handed a universal tag), the table says why and what ckptkeys says instead. The
comparison is also shown to fail on a changed bit, a missing file, an extra key, another dtype,
a changed model-states copy or ``latest_universal``, and a file ``weights_only`` refuses.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import shutil
from argparse import Namespace
from dataclasses import dataclass
from typing import Any

import pytest

import ckptkeys

from .conftest import DATA

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
dtu = pytest.importorskip("deepspeed.checkpoint.ds_to_universal")

from .universal_compare import assert_same_universal, load_pt  # noqa: E402  # imports torch

# What ds_to_universal 0.19.8 says when it refuses (the last line of its traceback).
NO_INFO = "AssertionError: Required universal_checkpoint_info state is missing in checkpoint."
NO_OPTIM = "FileNotFoundError: can't find *_optim_states.pt files in directory"
# ... and why ckptkeys refuses the same folder: the words its ExportError must hold.
WHY = {NO_INFO: "universal_checkpoint_info", NO_OPTIM: "optim_states"}

CONVERTS = None
# DeepSpeed crashes on MoE: the expert files of a ZeRO-0 save are read as optimizer files; the
# expert parameters of a ZeRO-2 save are reshaped to one expert's size (which parameter fails
# first depends on the interpreter's string hashing: the shapes in the message vary).
MOE_ZERO0 = "KeyError: 'optimizer_state_dict'"
MOE_RESHAPE = "RuntimeError: shape '["


@dataclass(frozen=True)
class Case:
    without: str | None
    """ds_to_universal without --inject_missing_state: the start of its error, or ``CONVERTS``."""
    injected: str | None
    """... with --inject_missing_state."""
    ours: tuple[str | None, str | None] = (None, None)
    """Where ckptkeys parts from it (without, with the option): the words of ckptkeys' refusal.
    ``None``: ckptkeys does as DeepSpeed does (the same files, or a refusal for its reason)."""


# ckptkeys refuses what ds_to_universal converts when the files disagree with each other: the
# output would be built from a checkpoint that is not one (export refuses them too).
DAMAGED = ("not converted", "not converted")
# A universal tag given as the source: DeepSpeed finds no optimizer files; ckptkeys says what it is.
UNIVERSAL = ("is a universal checkpoint already", "is a universal checkpoint already")

# tag folder (relative to tests/data) -> what ds_to_universal 0.19.8 does on it, measured.
DEEPSPEED: dict[str, Case] = {
    "fixtures/z0_fp32_ws1/global_step3": Case(NO_OPTIM, NO_OPTIM),
    "fixtures/z0_fp16_ws1/global_step3": Case(NO_OPTIM, NO_OPTIM),
    "fixtures/z1_bf16_ws1/global_step3": Case(NO_INFO, CONVERTS),
    "fixtures/z1_fp16_ws2/global_step3": Case(NO_INFO, CONVERTS),
    "fixtures/z2_bf16_ws2/global_step3": Case(NO_INFO, CONVERTS),
    "fixtures/z3_bf16_ws2/global_step3": Case(CONVERTS, CONVERTS),  # ZeRO-3 never asks for the info
    "universal_z3_ws3/step3": Case(CONVERTS, CONVERTS),
    "universal_z3_tp2/step3": Case(CONVERTS, CONVERTS),  # tensor parallel 2 with its info
    "fixtures/pp2_z1_bf16/global_step2": Case(NO_INFO, CONVERTS),
    "fixtures/tp2_z1_bf16/global_step3": Case(NO_INFO, CONVERTS),
    "fixtures/uc_z2_bf16_ws2/global_step3": Case(CONVERTS, CONVERTS),
    "fixtures/uc_z2_bf16_ws2/global_step3_universal": Case(NO_OPTIM, NO_OPTIM, UNIVERSAL),
    "universal_z3/global_step3_universal": Case(NO_OPTIM, NO_OPTIM, UNIVERSAL),
    "universal_z3_ws3/step3_universal": Case(NO_OPTIM, NO_OPTIM, UNIVERSAL),
    "universal_z3_tp2/step3_universal": Case(NO_OPTIM, NO_OPTIM, UNIVERSAL),
    "pp2_z0_fp32/global_step2": Case(NO_OPTIM, NO_OPTIM),
    "moe_z0_fp32_ep2/global_step3": Case(MOE_ZERO0, MOE_ZERO0, ("optimizer_state_dict", "optimizer_state_dict")),
    "fixtures/moe_z2_fp32_ep2/global_step3": Case(NO_INFO, MOE_RESHAPE, (None, "expert")),
    "clients/hf_trainer_z2_bf16/checkpoint-2/global_step2": Case(NO_INFO, CONVERTS),
    "clients/hf_trainer_z2_bf16/checkpoint-4/global_step4": Case(NO_INFO, CONVERTS),
    "clients/lightning_z2/epoch=0-step=2.ckpt/checkpoint": Case(NO_INFO, CONVERTS),
    "clients/lightning_z2/epoch=0-step=4.ckpt/checkpoint": Case(NO_INFO, CONVERTS),
    **{
        f"broken/{name}/global_step3": Case(NO_INFO, CONVERTS, DAMAGED)
        for name in (
            "dp_world_size",
            "mp_world_size",
            "no_zero_stage",
            "param_shapes",
            "partition_count",
            "stage_mismatch",
            "wrong_type",
        )
    },
}


def test_every_tag_folder_in_tests_data_is_in_the_table() -> None:
    """A checkpoint added to tests/data is added here too: the proof covers all of them."""
    tags = {p.parent.relative_to(DATA).as_posix() for p in DATA.rglob("*model_states.pt")}
    assert tags == set(DEEPSPEED)


@dataclass(frozen=True)
class Run:
    error: str | None
    """``<exception type>: <message>`` of ds_to_universal's failure, or ``None``."""
    output: pathlib.Path
    log: str


class DeepSpeedRuns:
    """ds_to_universal on each (tag folder, inject) once per session."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.runs: dict[tuple[str, bool], Run] = {}

    def __call__(self, case: str, inject: bool) -> Run:
        key = (case, inject)
        if key not in self.runs:
            tag = DATA / case
            folder = self.root / f"{len(self.runs)}"
            output = folder / f"{tag.name}_universal"
            args = Namespace(
                input_folder=str(tag),
                output_folder=str(output),
                num_extract_workers=1,
                num_merge_workers=1,
                keep_temp_folder=False,
                strict=True,
                inject_missing_state=inject,
            )
            log = io.StringIO()
            error = None
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    dtu.main(args)
                except Exception as failure:  # recorded, compared with the table
                    error = f"{type(failure).__name__}: {failure}"
            self.runs[key] = Run(error, output, log.getvalue())
        return self.runs[key]


@pytest.fixture(scope="session")
def deepspeed_runs(tmp_path_factory: pytest.TempPathFactory) -> DeepSpeedRuns:
    return DeepSpeedRuns(tmp_path_factory.mktemp("ds_to_universal"))


def _expected(case: str, inject: bool) -> str | None:
    return DEEPSPEED[case].injected if inject else DEEPSPEED[case].without


INJECT = pytest.mark.parametrize("inject", [False, True], ids=["plain", "inject"])


@INJECT
@pytest.mark.parametrize("case", list(DEEPSPEED))
def test_ds_to_universal_does_as_recorded(case: str, inject: bool, deepspeed_runs: DeepSpeedRuns) -> None:
    run = deepspeed_runs(case, inject)
    expected = _expected(case, inject)
    if expected is None:
        assert run.error is None, run.log[-3000:]
        assert (run.output / "zero" / "optimizer_state.pt").is_file()
    else:
        assert run.error is not None and run.error.startswith(expected), (run.error, run.log[-3000:])


@INJECT
@pytest.mark.parametrize("case", list(DEEPSPEED))
def test_universal_equals_ds_to_universal(
    case: str, inject: bool, deepspeed_runs: DeepSpeedRuns, tmp_path: pathlib.Path
) -> None:
    run = deepspeed_runs(case, inject)
    expected = _expected(case, inject)
    assert (run.error is None) == (expected is None), run.error  # as recorded (the test above says how)
    tag = DATA / case
    output = tmp_path / f"{tag.name}_universal"
    ours = DEEPSPEED[case].ours[inject]
    if ours is None and expected is None:
        plan = ckptkeys.universal(tag, output_folder=output, inject_missing_state=inject)
        assert pathlib.Path(plan.output) == output
        assert_same_universal(output, run.output)
        return
    with pytest.raises(ckptkeys.ExportError) as refused:
        ckptkeys.universal(tag, output_folder=output, inject_missing_state=inject)
    words = ours if ours is not None else WHY[expected or ""]
    assert words in str(refused.value), str(refused.value)
    assert not output.exists() and not (tmp_path / "latest_universal").exists()


# The comparison can fail: ds_to_universal's own output (tests/data) against a changed copy.
SOURCE = DATA / "fixtures" / "uc_z2_bf16_ws2" / "global_step3_universal"


def _copies(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    made = []
    for side in ("ours", "theirs"):
        folder = tmp_path / side / SOURCE.name
        shutil.copytree(SOURCE, folder)
        (tmp_path / side / "latest_universal").write_bytes((SOURCE.parent / "latest_universal").read_bytes())
        made.append(folder)
    return made[0], made[1]


def _resave(path: pathlib.Path, change: Any) -> None:
    """``torch.save`` the file again after ``change(obj)`` (which returns the new object)."""
    torch.save(change(load_pt(path)), path)


def test_the_same_tag_compares_equal_even_saved_again(tmp_path: pathlib.Path) -> None:
    ours, theirs = _copies(tmp_path)
    assert_same_universal(ours, theirs)
    for path in ours.rglob("*.pt"):  # new serialization ids, the same objects
        if "model_states" not in path.name:
            _resave(path, lambda obj: obj)
    assert_same_universal(ours, theirs)


def _nan(obj: Any) -> Any:
    with torch.no_grad():
        obj["param"].view(-1)[0] = float("nan")
    return obj


def test_nan_compares_by_its_bits(tmp_path: pathlib.Path) -> None:
    ours, theirs = _copies(tmp_path)
    for side in (ours, theirs):
        _resave(side / "zero" / "fc1.weight" / "fp32.pt", _nan)
    assert_same_universal(ours, theirs)


def _flip_bit(obj: Any) -> Any:
    with torch.no_grad():
        flat = obj["param"].view(-1).view(torch.int32)
        flat[3] ^= 1  # the lowest mantissa bit: equal under allclose
    return obj


def _extra_key(obj: Any) -> Any:
    obj["cat_dim"] = 0
    return obj


def _bfloat16(obj: Any) -> Any:
    obj["param"] = obj["param"].to(torch.bfloat16)
    return obj


@pytest.mark.parametrize(
    ("change", "message"),
    [(_flip_bit, "the bytes differ"), (_extra_key, "keys"), (_bfloat16, "dtype torch.bfloat16 != torch.float32")],
    ids=["bit", "key", "dtype"],
)
def test_a_changed_file_fails(change: Any, message: str, tmp_path: pathlib.Path) -> None:
    ours, theirs = _copies(tmp_path)
    path = ours / "zero" / "fc1.bias" / "exp_avg.pt"
    before = load_pt(path)["param"].clone()
    _resave(path, change)
    if change is _flip_bit:
        assert torch.allclose(load_pt(path)["param"], before)
    with pytest.raises(AssertionError, match=re.escape(message)) as failed:
        assert_same_universal(ours, theirs)
    assert str(path) in str(failed.value)


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_a_missing_file_fails(side: str, tmp_path: pathlib.Path) -> None:
    ours, theirs = _copies(tmp_path)
    ((ours if side == "ours" else theirs) / "zero" / "fc1.weight" / "step.pt").unlink()
    with pytest.raises(AssertionError, match="tree"):
        assert_same_universal(ours, theirs)


def test_a_changed_model_states_copy_or_latest_fails(tmp_path: pathlib.Path) -> None:
    ours, theirs = _copies(tmp_path)
    copy = next(ours.glob("*model_states.pt"))
    _resave(copy, lambda obj: {**obj, "my_note": "changed"})
    with pytest.raises(AssertionError, match="not a byte copy"):
        assert_same_universal(ours, theirs)
    ours, theirs = _copies(tmp_path / "again")
    (ours.parent / "latest_universal").write_text("global_step4_universal")
    with pytest.raises(AssertionError, match="latest_universal"):
        assert_same_universal(ours, theirs)


def test_a_file_weights_only_refuses_fails_where_theirs_loads(tmp_path: pathlib.Path) -> None:
    """Ours must load with weights_only=True where DeepSpeed's does: a file that pickles a
    tensor through a global torch's weights-only unpickler refuses (``copy.deepcopy`` here)
    is the same object, and still fails."""
    ours, theirs = _copies(tmp_path)
    path = ours / "zero" / "fc1.bias" / "fp32.pt"
    obj = load_pt(path)
    obj["param"] = _Rebuilt(obj["param"])
    torch.save(obj, path)
    assert type(load_pt(path)["param"]) is torch.Tensor
    with pytest.raises(AssertionError, match="weights_only=True"):
        assert_same_universal(ours, theirs)


class _Rebuilt:
    """Pickles as ``copy.deepcopy(tensor)``: a plain tensor again, through a global weights-only refuses."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple[Any, ...]:
        import copy

        return (copy.deepcopy, (self.tensor,))
