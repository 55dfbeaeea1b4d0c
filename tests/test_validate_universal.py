"""``validate`` on a universal tag: what DeepSpeed's universal loader does not restore, named.

On ``ds_to_universal``'s own outputs (``uc_z2_bf16_ws2``'s ZeRO-2 bf16 tag, ``universal_z3``'s
ZeRO-3 bf16 tag, both of a model with two frozen parameters and a buffer) and on copies changed
by hand: every ``step.pt`` deleted, one deleted, a frozen parameter's folder added, a ZeRO-3
folder's model states renamed to the ZeRO-1/2 name. The loader's behaviour these codes describe
was measured with DeepSpeed 0.19.8 (docs/universal.md, "What DeepSpeed's loader restores").
"""

from __future__ import annotations

import pathlib
import shutil

import pytest

import ckptkeys
from ckptkeys import Problem, Severity
from ckptkeys._cli._main import main

from .conftest import DATA, FIXTURES

Z2 = FIXTURES / "uc_z2_bf16_ws2" / "global_step3_universal"
Z3 = DATA / "universal_z3" / "global_step3_universal"
TRAINED = ["emb.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # param_shapes, in order
UNIVERSAL_CODES = {
    "universal-frozen-not-restored",
    "universal-buffers-not-restored",
    "universal-step-missing",
    "universal-no-engine",
    "universal-engines",
}


def _ours(path: pathlib.Path) -> dict[str, Problem]:
    problems = [p for p in ckptkeys.validate(path) if p.code in UNIVERSAL_CODES]
    by_code = {p.code: p for p in problems}
    assert len(by_code) == len(problems)  # one problem per code and tag
    return by_code


def _copy(tmp_path: pathlib.Path, tag: pathlib.Path) -> pathlib.Path:
    shutil.copytree(tag, tmp_path / tag.name)
    return tmp_path / tag.name


def _names_in(message: str) -> list[str]:
    """The names a message lists after its first colon (``...: 'a', 'b' (...``), in order."""
    listed = message.split(": ", 1)[1].split(" (", 1)[0]
    return [name.strip("'") for name in listed.split(", ")]


# -- ds_to_universal's outputs ---------------------------------------------------------------------


def test_zero2_tag_names_the_frozen_parameters_and_buffers_and_the_way_out() -> None:
    found = _ours(Z2)
    assert set(found) == {"universal-frozen-not-restored", "universal-buffers-not-restored", "universal-engines"}
    frozen, buffers = found["universal-frozen-not-restored"], found["universal-buffers-not-restored"]
    assert frozen.severity is Severity.WARNING and buffers.severity is Severity.WARNING
    assert frozen.file == str(Z2) and buffers.file == str(Z2)
    assert frozen.message.startswith("DeepSpeed's universal loader does not restore 2 frozen parameters: ")
    assert _names_in(frozen.message) == ["frozen.weight", "frozen.bias"]
    assert buffers.message.startswith("DeepSpeed's universal loader does not restore 1 buffer: 'scale' ")
    for problem in (frozen, buffers):
        assert "zero/<name>/fp32.pt holds their values" in problem.message  # ds_to_universal wrote each one
        assert "module of mp_rank_00_model_states.pt" in problem.message and "pretrained weights" in problem.message
        assert not any(name in problem.message for name in TRAINED)


def test_zero2_tag_loads_into_zero12_engines_only() -> None:
    engines = _ours(Z2)["universal-engines"]
    assert engines.severity is Severity.INFO
    assert engines.message.startswith("a ZeRO-1/2 universal folder: only a ZeRO-1/2 engine loads it")
    assert "no zero_pp_rank_0_mp_rank_*_model_states.pt" in engines.message
    assert "no optimizer_state_dict['state'][0]['step']" in engines.message


def test_zero3_tag_names_what_has_no_file_and_where_the_values_are() -> None:
    found = _ours(Z3)
    assert set(found) == {"universal-frozen-not-restored", "universal-buffers-not-restored", "universal-engines"}
    frozen, buffers = found["universal-frozen-not-restored"], found["universal-buffers-not-restored"]
    assert _names_in(frozen.message) == ["frozen.weight", "frozen.bias"]
    assert "writes them no file under ZeRO-3" in frozen.message and "frozen_param_fragments" in frozen.message
    assert _names_in(buffers.message) == ["scale"]
    assert "module of zero_pp_rank_0_mp_rank_00_model_states.pt" in buffers.message
    assert not (Z3 / "zero" / "frozen.weight").exists() and not (Z3 / "zero" / "scale").exists()


def test_zero3_tag_loads_into_zero3_engines_only_and_says_why_not_zero12() -> None:
    engines = _ours(Z3)["universal-engines"]
    assert engines.severity is Severity.INFO
    assert engines.message.startswith("a ZeRO-3 universal folder: only a ZeRO-3 engine loads it")
    assert "no mp_rank_*_model_states.pt" in engines.message and "no ds_version" in engines.message
    assert "hold a bare tensor" in engines.message  # fp32.pt/exp_avg*.pt without {'param': ...}


def test_no_step_warning_for_zero3_whose_loader_ignores_step_pt() -> None:
    assert not list((Z3 / "zero").glob("*/step.pt")) and "universal-step-missing" not in _ours(Z3)


def test_a_tag_that_is_not_universal_gets_none_of_these() -> None:
    for folder in (FIXTURES / "z2_bf16_ws2", FIXTURES / "z3_bf16_ws2", FIXTURES / "uc_z2_bf16_ws2" / "global_step3"):
        assert _ours(folder) == {}


# -- changed by hand -------------------------------------------------------------------------------


def test_every_step_pt_deleted_is_a_warning_naming_every_trained_parameter(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path, Z2)
    for step in (tag / "zero").glob("*/step.pt"):
        step.unlink()
    problems = ckptkeys.validate(tag)
    assert [p for p in problems if p.severity is Severity.ERROR] == []  # the loader takes it without a word
    lost = _ours(tag)["universal-step-missing"]
    assert lost.severity is Severity.WARNING and lost.file == str(tag)
    assert _names_in(lost.message) == TRAINED
    assert "step count is lost" in lost.message and "convert the source tag again" in lost.message


def test_one_step_pt_deleted_is_completeness_error_not_this_warning(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path, Z2)
    (tag / "zero" / "fc1.bias" / "step.pt").unlink()
    problems = ckptkeys.validate(tag)
    errors = [(p.code, p.file) for p in problems if p.severity is Severity.ERROR]
    assert errors == [("missing-universal-param", str(tag / "zero" / "fc1.bias" / "step.pt"))]
    assert "universal-step-missing" not in _ours(tag)


def test_a_folder_of_a_name_no_optimizer_group_holds_is_named_as_frozen(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path, Z2)
    shutil.copytree(tag / "zero" / "frozen.bias", tag / "zero" / "adapter.weight")  # fp32.pt only
    frozen = _ours(tag)["universal-frozen-not-restored"]
    assert frozen.message.startswith("DeepSpeed's universal loader does not restore 3 frozen parameters: ")
    assert _names_in(frozen.message) == ["frozen.weight", "frozen.bias", "adapter.weight"]


def test_a_trained_parameter_with_only_fp32_pt_is_not_named(tmp_path: pathlib.Path) -> None:
    """A parameter that got no gradient before the save has no optimizer fragment: ds_to_universal
    writes it only ``fp32.pt``, and the loader restores it (it is in ``param_shapes``)."""
    tag = _copy(tmp_path, Z2)
    for state in ("exp_avg.pt", "exp_avg_sq.pt", "step.pt"):
        for param in TRAINED:
            (tag / "zero" / param / state).unlink()
    found = _ours(tag)
    assert _names_in(found["universal-frozen-not-restored"].message) == ["frozen.weight", "frozen.bias"]
    assert found["universal-frozen-not-restored"].message.startswith("DeepSpeed's universal loader does not restore 2 ")
    assert "universal-step-missing" not in found  # no moments: no step to lose


def test_zero3_model_states_under_the_zero12_name_load_nowhere(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path, Z3)
    for rank in (0, 1):
        (tag / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt").unlink()
    shutil.copy(Z3 / "zero_pp_rank_0_mp_rank_00_model_states.pt", tag / "mp_rank_00_model_states.pt")
    found = _ours(tag)
    assert "universal-engines" not in found
    none = found["universal-no-engine"]
    assert none.severity is Severity.WARNING
    assert "a ZeRO-1/2 engine because zero/optimizer_state.pt has no ds_version" in none.message
    assert "a ZeRO-3 engine because it finds no zero_pp_rank_0_mp_rank_*_model_states.pt" in none.message


def test_no_optimizer_state_is_an_error_of_its_own_and_no_engine_verdict(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path, Z2)
    (tag / "zero" / "optimizer_state.pt").unlink()
    found = _ours(tag)
    assert "universal-engines" not in found and "universal-no-engine" not in found
    assert "missing-universal-state" in {p.code for p in ckptkeys.validate(tag) if p.severity is Severity.ERROR}


# -- the command -----------------------------------------------------------------------------------


def test_the_command_prints_them_and_fails_on_warning_unless_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--isolated", "--fail-on", "warning", str(Z2)]) == 1
    out = capsys.readouterr().out
    assert "universal-frozen-not-restored" in out and "'frozen.weight', 'frozen.bias'" in out
    assert "universal-buffers-not-restored" in out and "'scale'" in out
    assert main(["validate", "--isolated", "--fail-on", "warning", "--ignore", "universal", str(Z2)]) == 0


# -- ckptkeys universal's own output ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["z2_bf16_ws2", "z1_bf16_ws1", "z1_fp16_ws2", "tp2_z1_bf16", "pp2_z1_bf16"])
def test_validate_names_what_the_plan_names_as_not_restored(tmp_path: pathlib.Path, name: str) -> None:
    """The command's summary (``UniversalPlan.not_restored``) and ``validate`` of what it wrote agree."""
    plan = ckptkeys.universal(FIXTURES / name, output_folder=tmp_path / "universal", inject_missing_state=True)
    problems = ckptkeys.validate(plan.output)
    assert [p for p in problems if p.severity is Severity.ERROR] == []
    found = _ours(pathlib.Path(plan.output))
    for code, kind in (("universal-frozen-not-restored", "frozen"), ("universal-buffers-not-restored", "buffer")):
        planned = sorted(n.name for n in plan.not_restored if n.kind == kind)
        named = sorted(_names_in(found[code].message)) if code in found else []
        assert named == planned
    assert found["universal-engines"].message.startswith("a ZeRO-1/2 universal folder")
