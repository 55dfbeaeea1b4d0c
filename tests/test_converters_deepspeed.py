"""The readiness verdicts against DeepSpeed's own converters (needs torch and DeepSpeed 0.19.8).

For every save folder DeepSpeed wrote here (the fixtures, the Hugging Face Trainer and Lightning
saves, the MoE checkpoint without ZeRO), on its ``latest`` tag: run
``get_fp32_state_dict_from_zero_checkpoint`` (zero_to_fp32) and, where ckptkeys says that is
ready, ``convert_zero_checkpoint_to_fp32_state_dict(..., safe_serialization=True)`` in this
process, and ``python -m deepspeed.checkpoint.ds_to_universal`` in a subprocess; assert that each
succeeded exactly where ckptkeys said ``ready``. No verdict is written here by hand: the
expectation is what DeepSpeed does. Together with test_validate's
``test_deepspeed_output_has_no_warning_and_converter_verdicts_are_information`` this proves that
every readiness problem on DeepSpeed's own output is a verdict DeepSpeed confirms.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shutil

import pytest

import ckptkeys

from .conftest import DATA, FIXTURES, ds_to_universal

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
pytest.importorskip("torch")
zero_to_fp32 = pytest.importorskip("deepspeed.utils.zero_to_fp32")

SAVES = {
    **{name: FIXTURES / name for name in sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())},
    "trainer-checkpoint-2": DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-2",
    "trainer-checkpoint-4": DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-4",
    "lightning-step-2": DATA / "clients" / "lightning_z2" / "epoch=0-step=2.ckpt",
    "lightning-step-4": DATA / "clients" / "lightning_z2" / "epoch=0-step=4.ckpt",
    "moe_z0_fp32_ep2": DATA / "moe_z0_fp32_ep2",
}


def _verdicts(folder: pathlib.Path) -> tuple[str, dict[str, ckptkeys.Verdict]]:
    report = ckptkeys.validate_folder(folder)
    latest = report.layout.latest
    assert latest is not None
    tag = next(t for t in report.tags if t.layout.name == latest)
    return latest, tag.converters


def _outcome(call: object, *args: object, **kwargs: object) -> tuple[bool, str]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            call(*args, **kwargs)  # type: ignore[operator]
    except Exception as error:  # whatever DeepSpeed raises is a refusal
        return False, f"{type(error).__name__}: {error}"
    return True, "succeeded"


@pytest.mark.parametrize("name", SAVES)
def test_zero_to_fp32_agrees(name: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "save"
    shutil.copytree(SAVES[name], root)
    _, verdicts = _verdicts(root)
    verdict = verdicts["zero_to_fp32"]
    succeeded, what = _outcome(zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint, str(root))
    assert verdict.ready == succeeded, (what, verdict)
    if not verdict.ready:
        assert verdict.safe_serialization is None
        return
    # The safetensors path: its own verdict.
    safe = verdict.safe_serialization
    assert safe is not None
    succeeded, what = _outcome(
        zero_to_fp32.convert_zero_checkpoint_to_fp32_state_dict, str(root), str(tmp_path / "out"), safe_serialization=True
    )
    assert safe.ready == succeeded, (what, safe)
    if not succeeded:
        assert "share memory" in what and safe.code == "tied-weights"
        # The way out the reason names first works.
        assert _outcome(zero_to_fp32.convert_zero_checkpoint_to_fp32_state_dict, str(root), str(tmp_path / "bin"))[0]


@pytest.mark.parametrize("name", SAVES)
def test_ds_to_universal_agrees(name: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "save"
    shutil.copytree(SAVES[name], root)
    latest, verdicts = _verdicts(root)
    result = ds_to_universal(root / latest, tmp_path / "universal")
    verdict = verdicts["ds_to_universal"]
    assert verdict.applicable
    assert verdict.ready == (result.returncode == 0), (result.stderr[-2000:], verdict)
    if result.returncode == 0:
        _assert_clean_universal(tmp_path / "universal")
    elif (verdict.reason or "").startswith("run ds_to_universal with --inject_missing_state"):
        injected = ds_to_universal(root / latest, tmp_path / "injected", "--inject_missing_state")
        assert injected.returncode == 0, injected.stderr[-2000:]
        _assert_clean_universal(tmp_path / "injected")


# What DeepSpeed's universal loader will not restore from a good universal tag (docs/universal.md):
# warnings about resuming from it, not about its files.
RESUME_WARNINGS = {"universal-frozen-not-restored", "universal-buffers-not-restored"}


def _assert_clean_universal(folder: pathlib.Path) -> None:
    """DeepSpeed's universal output: a tag with not-applicable verdicts, and no warning but what
    its loader will not restore (the fixtures have frozen parameters and a buffer)."""
    output = ckptkeys.validate_folder(folder)
    (tag,) = output.tags
    assert tag.layout.universal
    assert all(not v.applicable for v in tag.converters.values())
    loud = [p for p in output.all_problems if p.severity is not ckptkeys.Severity.INFO]
    assert [p for p in loud if p.code not in RESUME_WARNINGS] == []
    assert all(p.severity is ckptkeys.Severity.WARNING for p in loud)
