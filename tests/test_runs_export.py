"""Run folders exported, and scanned, as ``inspect`` takes them; side files; ``--strip-prefix``; tied aliases.

Torch-free: tests/data/clients holds a real Hugging Face Trainer run and a Lightning run (its README);
an Accelerate ``save_state`` folder is built here from the Trainer save's DeepSpeed files. The fp32
exports copy the fp32 masters (no cast, so no numpy). The loads by ``transformers`` are in
tests/test_runs_export_transformers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import ckptkeys
from ckptkeys import ExportError, NotACheckpointError, plan_export, scan
from ckptkeys._export._side import MAX_SIDE_FILE_BYTES, SIDE_FILE_NAMES
from ckptkeys._export._types import common_prefix

from .conftest import DATA, ROOT

CLIENTS = DATA / "clients"
TRAINER = CLIENTS / "hf_trainer_z2_bf16"
LIGHTNING = CLIENTS / "lightning_z2"
NEWEST = TRAINER / "checkpoint-4"
TIED = "lm_head.weight = transformer.wte.weight: written once; from_pretrained re-ties it"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", *args], capture_output=True, text=True, env=env, check=False
    )


def trainer_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    run = tmp_path / "run"
    shutil.copytree(TRAINER, run)
    return run


# -- scan and plan_export take a run folder ------------------------------------------------------


def test_scan_of_a_run_is_its_newest_save() -> None:
    layout = scan(TRAINER)
    assert layout.run == str(TRAINER)
    assert layout.path == str(NEWEST) and layout.kind == "save" and layout.latest == "global_step4"
    assert layout.framework == "transformers"
    assert scan(NEWEST).run is None
    older = scan(TRAINER, save="checkpoint-2", read=True)
    assert older.path == str(TRAINER / "checkpoint-2") and older.run == str(TRAINER)
    assert older.tags[0].checkpoints  # read=True applies to the chosen save
    lightning = scan(LIGHTNING)
    assert lightning.path == str(LIGHTNING / "epoch=0-step=4.ckpt") and lightning.framework == "lightning"


def test_scan_of_a_run_chooses_as_inspect_does() -> None:
    for run in (TRAINER, LIGHTNING):
        report = ckptkeys.validate_run(run)
        assert scan(run).path == report.saves[0].layout.path


def test_scan_save_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyError):
        scan(TRAINER, save="checkpoint-3")
    with pytest.raises(ValueError, match="not a run folder"):
        scan(NEWEST, save="checkpoint-4")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NotACheckpointError, match="holds no DeepSpeed checkpoint.*no save folders"):
        scan(tmp_path / "empty")


def test_plan_of_a_run_is_the_plan_of_its_newest_save() -> None:
    assert plan_export(TRAINER).as_dict() == plan_export(NEWEST).as_dict()
    older = plan_export(TRAINER, save="checkpoint-2")
    assert older.as_dict() == plan_export(TRAINER / "checkpoint-2").as_dict()
    assert older.checkpoint == str(TRAINER / "checkpoint-2" / "global_step2")
    assert plan_export(LIGHTNING).checkpoint == str(LIGHTNING / "epoch=0-step=4.ckpt" / "checkpoint")
    with pytest.raises(KeyError):
        plan_export(TRAINER, save="checkpoint-3")
    with pytest.raises(ValueError, match="not a run folder"):
        plan_export(NEWEST, save="checkpoint-2")


def test_export_command_unknown_save_as_inspect(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    exported = cli("export", str(LIGHTNING), str(out), "--save", "epoch=9.ckpt")
    inspected = cli("inspect", str(LIGHTNING), "--save", "epoch=9.ckpt")
    assert exported.returncode == inspected.returncode == 2
    message = "no save 'epoch=9.ckpt'; the saves are: epoch=0-step=4.ckpt, epoch=0-step=2.ckpt"
    assert exported.stderr == f"ckptkeys export: {LIGHTNING}: {message}\n"
    assert inspected.stderr == f"ckptkeys inspect: {LIGHTNING}: {message}\n"
    off_run = cli("export", str(NEWEST), str(out), "--save", "checkpoint-2")
    assert off_run.returncode == 2 and "not a run folder" in off_run.stderr
    assert not out.exists()


def test_export_command_writes_the_newest_save(tmp_path: pathlib.Path) -> None:
    from_run = cli("export", str(TRAINER), str(tmp_path / "run"), "-q")
    from_save = cli("export", str(NEWEST), str(tmp_path / "save"), "-q")
    assert from_run.returncode == from_save.returncode == 0, from_run.stderr + from_save.stderr
    written = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert written == (tmp_path / "save" / "model.safetensors").read_bytes()
    older = cli("export", str(TRAINER), str(tmp_path / "older"), "--save", "checkpoint-2", "-q")
    assert older.returncode == 0, older.stderr
    assert (tmp_path / "older" / "model.safetensors").read_bytes() != written


def accelerate_run(root: pathlib.Path) -> pathlib.Path:
    """Accelerate's save_state: checkpoints/checkpoint_0/{pytorch_model/, latest = pytorch_model, random_states_0.pkl},
    the DeepSpeed files being the Trainer save's."""
    save = root / "checkpoints" / "checkpoint_0"
    shutil.copytree(NEWEST / "global_step4", save / "pytorch_model")
    (save / "latest").write_text("pytorch_model")
    (save / "random_states_0.pkl").write_bytes(b"\x80\x04N.")
    return root / "checkpoints"


def test_accelerate_save_state_exports(tmp_path: pathlib.Path) -> None:
    checkpoints = accelerate_run(tmp_path)
    layout = scan(checkpoints)
    assert layout.framework == "accelerate" and layout.latest == "pytorch_model" and layout.run == str(checkpoints)
    plan = plan_export(checkpoints)
    assert plan.tag == "pytorch_model" and plan.side_files == ()
    assert plan.checkpoint == str(checkpoints / "checkpoint_0" / "pytorch_model")
    ckptkeys.export(checkpoints, tmp_path / "accelerate")
    ckptkeys.export(checkpoints / "checkpoint_0", tmp_path / "save")
    ckptkeys.export(NEWEST, tmp_path / "trainer")
    written = (tmp_path / "accelerate" / "model.safetensors").read_bytes()
    assert written == (tmp_path / "save" / "model.safetensors").read_bytes()
    # The same tensors as the Trainer's save; only the plan identity differs (another tag name).
    assert _without_plan_identity(written) == _without_plan_identity(
        (tmp_path / "trainer" / "model.safetensors").read_bytes()
    )
    assert sorted(os.listdir(tmp_path / "accelerate")) == ["model.safetensors"]


def _without_plan_identity(data: bytes) -> tuple[dict[str, object], bytes]:
    """A safetensors file's header without ``__metadata__['ckptkeys_plan']``, and its tensor bytes."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"].pop("ckptkeys_plan")
    return header, data[8 + size :]


# -- side files ----------------------------------------------------------------------------------


def test_side_files_of_a_trainer_save() -> None:
    expected = (str(NEWEST / "config.json"), str(NEWEST / "generation_config.json"))
    assert plan_export(TRAINER).side_files == expected
    assert plan_export(NEWEST).side_files == expected
    assert plan_export(NEWEST / "global_step4").side_files == ()  # a tag folder alone: nothing beside it is read
    assert plan_export(LIGHTNING).side_files == ()


def test_side_files_are_the_trainers_files_to_inspect() -> None:
    """inspect lists each side file among the framework's files, never as a stray entry."""
    from ckptkeys._check._frameworks import is_framework_file

    assert [name for name in SIDE_FILE_NAMES if not is_framework_file(name)] == []


def test_side_files_come_from_the_run_when_the_save_has_none(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    for name in ("config.json", "generation_config.json"):
        (run / "checkpoint-4" / name).unlink()
    assert plan_export(run).side_files == (str(run / "config.json"), str(run / "generation_config.json"))
    assert plan_export(run / "checkpoint-4").side_files == ()  # given the save, its run is not looked at


def test_tokenizer_files_are_taken_and_weights_never(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    save = run / "checkpoint-4"
    tokenizer = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "added_tokens.json", "chat_template.jinja", "preprocessor_config.json"]  # fmt: skip
    for name in tokenizer:
        (save / name).write_text(name)
    (save / "pytorch_model.bin").write_bytes(b"weights")
    (save / "model-00001-of-00002.safetensors").write_bytes(b"weights")
    names = {os.path.basename(path) for path in plan_export(run).side_files}
    assert names == {"config.json", "generation_config.json", *tokenizer}
    weights = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|pkl|h5|msgpack)(\.index\.json)?")
    assert [name for name in SIDE_FILE_NAMES if weights.fullmatch(name)] == []
    assert not names & set(os.listdir(save)) - set(SIDE_FILE_NAMES)


def test_side_file_leading_out_is_refused(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    config = run / "checkpoint-4" / "config.json"
    config.unlink()
    config.symlink_to(secret)
    with pytest.raises(ExportError, match="config.json: leads outside the folder") as caught:
        plan_export(run)
    assert caught.value.path == str(config)
    out = tmp_path / "out"
    done = cli("export", str(run), str(out))
    assert done.returncode == 1 and str(config) in done.stderr and not out.exists()


def test_side_file_symlink_inside_its_folder_is_copied_under_its_own_name(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    save = run / "checkpoint-4"
    (save / "tokenizer_config.json").symlink_to("generation_config.json")
    plan = plan_export(run)
    assert str(save / "tokenizer_config.json") in plan.side_files
    ckptkeys.write_export(plan, tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer_config.json").is_symlink()
    assert (tmp_path / "out" / "tokenizer_config.json").read_bytes() == (save / "generation_config.json").read_bytes()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_side_file_fifo_is_refused(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    os.mkfifo(run / "checkpoint-4" / "tokenizer.json")
    with pytest.raises(ExportError, match="tokenizer.json: is a FIFO, not a regular file"):
        plan_export(run)


def test_side_file_larger_than_the_cap_is_refused(tmp_path: pathlib.Path) -> None:
    run = trainer_copy(tmp_path)
    with open(run / "checkpoint-4" / "tokenizer.json", "wb") as stream:
        stream.truncate(MAX_SIDE_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ExportError, match=f"tokenizer.json: is larger than {MAX_SIDE_FILE_BYTES} bytes"):
        plan_export(run)
    with open(run / "checkpoint-4" / "tokenizer.json", "wb") as stream:
        stream.truncate(MAX_SIDE_FILE_BYTES)
    assert str(run / "checkpoint-4" / "tokenizer.json") in plan_export(run).side_files


def test_dry_run_lists_side_files_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    done = cli("export", str(TRAINER), str(out), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"  side file: {NEWEST / 'config.json'}\n" in done.stdout
    assert f"  side file: {NEWEST / 'generation_config.json'}\n" in done.stdout
    assert f"{TIED}\n" in done.stdout
    as_json = cli("export", str(TRAINER), str(out), "--dry-run", "--json")
    assert '"side_files": [\n    "' + str(NEWEST / "config.json") in as_json.stdout
    assert not out.exists()


def test_side_files_written_beside_the_weights(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    done = cli("export", str(TRAINER), str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith(f"{TIED}\n")
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
    for name in ("config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (NEWEST / name).read_bytes()


def test_side_file_already_in_out_dir_needs_overwrite(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("mine")
    done = cli("export", str(TRAINER), str(out))
    assert done.returncode == 2 and f"{out / 'config.json'}: already exists" in done.stderr
    assert sorted(os.listdir(out)) == ["config.json"] and (out / "config.json").read_text() == "mine"
    done = cli("export", str(TRAINER), str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "config.json").read_bytes() == (NEWEST / "config.json").read_bytes()


def test_side_file_never_written_through_a_symlink_in_out_dir(tmp_path: pathlib.Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("untouched")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").symlink_to(victim)
    with pytest.raises(ckptkeys.OutputExistsError):
        ckptkeys.export(TRAINER, out)
    ckptkeys.export(TRAINER, out, overwrite=True)
    assert victim.read_text() == "untouched"
    assert not (out / "config.json").is_symlink()
    assert (out / "config.json").read_bytes() == (NEWEST / "config.json").read_bytes()
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]


def test_job_array_side_files_come_with_the_index(tmp_path: pathlib.Path) -> None:
    plan = plan_export(TRAINER, max_shard_size="40KB")
    assert plan.sharded
    out = tmp_path / "out"
    for k in range(1, len(plan.shards) + 1):
        ckptkeys.write_export(plan, out, shard=(k, len(plan.shards)))
    assert not (out / "config.json").exists()
    ckptkeys.write_export(plan, out, index_only=True)
    assert (out / "config.json").read_bytes() == (NEWEST / "config.json").read_bytes()


# -- --strip-prefix ------------------------------------------------------------------------------


def test_strip_prefix_gives_the_bare_model_names() -> None:
    plan = plan_export(LIGHTNING)
    assert plan.common_prefix == "m."
    assert plan.as_dict()["common_prefix"] == "m."
    assert plan.aliases == {"m.lm_head.weight": "m.transformer.wte.weight"}
    stripped = plan_export(LIGHTNING, strip_prefix="m.")
    assert stripped.common_prefix is None
    assert stripped.aliases == {"lm_head.weight": "transformer.wte.weight"}
    trainer = plan_export(TRAINER)
    assert trainer.common_prefix is None
    same = [(t.name, t.shape, t.dtype) for t in trainer.tensors]
    assert [(t.name, t.shape, t.dtype) for t in stripped.tensors] == same
    assert [t.name for t in stripped.tensors] == [t.name[len("m.") :] for t in plan.tensors]
    assert [t.sources for t in stripped.tensors] == [t.sources for t in plan.tensors]
    assert stripped.index()["weight_map"].keys() == {t.name for t in stripped.tensors}


def test_export_api_takes_save_and_strip_prefix(tmp_path: pathlib.Path) -> None:
    plan = ckptkeys.export(LIGHTNING, tmp_path / "out", save="epoch=0-step=2.ckpt", strip_prefix="m.")
    assert plan.checkpoint == str(LIGHTNING / "epoch=0-step=2.ckpt" / "checkpoint")
    raw = (tmp_path / "out" / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert set(header) - {"__metadata__"} == {t.name for t in plan.tensors}
    assert "transformer.wte.weight" in header and "lm_head.weight" not in header


def test_strip_prefix_refuses_a_name_without_it(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError, match=r"tensor 'transformer\.wte\.weight' does not start with 'm\.'"):
        plan_export(TRAINER, strip_prefix="m.")
    with pytest.raises(ValueError, match="must not be empty"):
        plan_export(LIGHTNING, strip_prefix="")
    done = cli("export", str(LIGHTNING), str(tmp_path / "out"), "--strip-prefix", "model.")
    assert done.returncode == 2  # a bad option value: usage
    assert "tensor 'm.transformer.wte.weight' does not start with 'model.'; --strip-prefix takes a prefix" in done.stderr
    assert not (tmp_path / "out").exists()


def test_strip_prefix_suggested_only_when_every_name_shares_one(tmp_path: pathlib.Path) -> None:
    suggestion = "every name starts with 'm.': --strip-prefix m. takes it off (a module attribute)"
    lightning = cli("export", str(LIGHTNING), str(tmp_path / "out"), "--dry-run")
    assert lightning.returncode == 0 and f"{suggestion}\n" in lightning.stdout
    assert "m.lm_head.weight = m.transformer.wte.weight: written once; from_pretrained re-ties it" in lightning.stdout
    stripped = cli("export", str(LIGHTNING), str(tmp_path / "out"), "--dry-run", "--strip-prefix", "m.")
    assert "--strip-prefix" not in stripped.stdout and f"{TIED}\n" in stripped.stdout
    trainer = cli("export", str(TRAINER), str(tmp_path / "out"), "--dry-run")
    assert "--strip-prefix" not in trainer.stdout


@pytest.mark.parametrize(
    ("names", "prefix"),
    [
        (["a.b.c", "a.b.d"], "a.b."),
        (["model.a", "model.ab.c"], "model."),
        (["_forward_module.model.x.w", "_forward_module.model.y"], "_forward_module.model."),
        (["model.x", "modelb.x"], None),
        (["x.y", "x.z", "w"], None),
        (["a.b.c"], None),
        ([], None),
        (["ab.c", "ab"], None),
    ],
)
def test_common_prefix(names: list[str], prefix: str | None) -> None:
    assert common_prefix(names) == prefix


# -- documented ----------------------------------------------------------------------------------


def test_export_options_are_documented() -> None:
    from ckptkeys._cli._export import add_export

    parser = argparse.ArgumentParser()
    add_export(parser.add_subparsers())
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = {o for action in commands.choices["export"]._actions for o in action.option_strings} - {"-h", "--help"}
    table = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    (heading,) = [line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if "`ckptkeys export " in line]
    for option in sorted(options):
        if option.startswith("--"):
            assert re.search(rf"^\|.*`{option}[ `]", table, re.MULTILINE), option  # in the options table
            assert f"[{option}" in heading or f"| {option}" in heading or f" {option}]" in heading, option


def test_side_file_names_are_documented() -> None:
    text = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    section = text[text.index("**Side files.**") : text.index("**`--strip-prefix PREFIX`.**")]
    assert [name for name in SIDE_FILE_NAMES if f"`{name}`" not in section] == []
    assert f"{MAX_SIDE_FILE_BYTES >> 20} MiB" in section
