"""The red team's findings on plain files, safetensors files and weights folders (R21b), each pinned."""

from __future__ import annotations

import io
import json
import pathlib
import re
import shutil
import struct
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys._check._plain_files import is_deepspeed_dict
from ckptkeys._cli._main import main
from ckptkeys._cli._report_text import shown

from . import security_cases
from .conftest import DATA

TRAINER_WEIGHTS = DATA / "clients" / "hf_trainer_z2_bf16" / "model.safetensors"
# Built by the red team with torch from z1_bf16_ws1's files: the model states with ds_version=0.19,
# dp_world_size="1" (and other markers of the wrong type); the BF16 optimizer states with
# ds_version=b"0.19.8", ds_config=None; the model states with every marker key removed.
REDTEAM = DATA / "redteam5"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_safetensors_under_a_deepspeed_name_is_an_error(tmp_path: pathlib.Path, name: str) -> None:
    named = tmp_path / name
    shutil.copyfile(TRAINER_WEIGHTS, named)
    with pytest.raises(ckptkeys.NotACheckpointError, match="is a safetensors file, not a torch checkpoint$"):
        ckptkeys.validate(named)
    for command in ("validate", "inspect"):
        status, out, err = _run(command, str(named))
        assert (status, out) == (2, "")
        assert err == f"ckptkeys {command}: {named}: is a safetensors file, not a torch checkpoint\n"
    # In a tag folder, the same file is the same refusal, as an unreadable-file error.
    tag = tmp_path / "global_step1"
    tag.mkdir()
    shutil.copyfile(TRAINER_WEIGHTS, tag / "mp_rank_00_model_states.pt")
    (unreadable,) = [p for p in ckptkeys.validate(tag) if p.code == "unreadable-file"]
    assert unreadable.message == "is a safetensors file, not a torch checkpoint"


@pytest.mark.parametrize("name", ["wrongtypes.pt", "optim_wrongtypes.pt"])
def test_markers_of_the_wrong_type_make_a_deepspeed_file_with_wrong_type_errors(name: str) -> None:
    path = REDTEAM / name
    assert is_deepspeed_dict(ckptkeys.read(path).data)
    problems = ckptkeys.validate(path)
    assert "not-deepspeed" not in [p.code for p in problems]
    wrong = {p.key_path for p in problems if p.code == "wrong-type"}
    assert "ds_version" in wrong
    status, out, _ = _run("validate", str(path))
    assert status == 1 and "wrong-type" in out


def test_a_file_stripped_of_the_keys_every_save_holds_is_still_deepspeeds() -> None:
    """The red team's nomarkers.pt keeps keys only some saves hold (shared_params, data_sampler,
    random_ltd, global_samples): they are DeepSpeed's too, so it gets missing-key errors (a re-check
    found it passed as plain). The documented limit is a file with none but the generic keys."""
    path = REDTEAM / "nomarkers.pt"
    assert is_deepspeed_dict(ckptkeys.read(path).data)
    codes = [p.code for p in ckptkeys.validate(path)]
    assert "missing-key" in codes and "not-deepspeed" not in codes
    generic: dict[str, object] = {"module": {}, "optimizer": None, "lr_scheduler": None, "global_steps": 3, "my_note": "x"}
    assert not is_deepspeed_dict(generic)


@pytest.mark.parametrize(
    "data", [{"ds_version": 0.19}, {"dp_world_size": "1"}, {"ds_config": None}, {"param_shapes": {"a": 1}}]
)
def test_any_non_tensor_marker_value_counts(data: dict[str, object]) -> None:
    assert is_deepspeed_dict(data)


def _zip_behind_a_header(path: pathlib.Path) -> None:
    """A valid safetensors header whose length is ``PK\\x03\\x04`` (67 MB of JSON and spaces), with a torch
    zip naming ``os.system`` after it, each member's offset counted from the file's start: torch.load
    reads the zip (miniz finds its directory at the end), safetensors the header."""
    length = struct.unpack("<Q", b"PK\x03\x04" + bytes(4))[0]
    pickle = security_cases._proto(2) + security_cases._call("os", "system", "true") + b"."
    with path.open("w+b") as out:
        out.write(struct.pack("<Q", length))
        out.seek(8 + length)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # offsets from the file's start
            for name, data in security_cases._records(pickle, b"poly"):
                archive.writestr(name.decode(), data)
        end = out.seek(0, 2)
        header = json.dumps({"t": {"dtype": "U8", "shape": [end - 8 - length], "data_offsets": [0, end - 8 - length]}})
        out.seek(8)
        out.write(header.encode() + b" " * (length - len(header)))


def test_a_zip_behind_a_safetensors_header_lists_its_globals(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "poly.safetensors"
    _zip_behind_a_header(path)
    assert ckptkeys.read_safetensors(path).tensors[0].name == "t"
    assert [ref.qualname for ref in ckptkeys.read(path).globals] == ["os.system"]
    with pytest.raises(ckptkeys.AmbiguousFileError) as caught:
        ckptkeys.validate(path)
    assert [ref.qualname for ref in caught.value.globals] == ["os.system"]
    assert "its pickles name os.system" in str(caught.value)
    status, out, err = _run("validate", "--json", str(path))
    assert status == 2
    error = json.loads(out)["error"]
    assert error["code"] == "ambiguous-file"
    assert [(g["name"], g["class"]) for g in error["globals"]] == [("os.system", "code-execution")]
    # One line on stderr, with the globals and the code-execution finding in it.
    assert err.count("\n") == 1
    assert "its pickles name os.system" in err and "os.system would run code" in err


def test_an_unreadable_file_s_globals_are_in_its_one_line(tmp_path: pathlib.Path) -> None:
    """Any refusal that carries globals: one line, naming them (docs/cli.md: every error is one line)."""
    path = tmp_path / "model.pt"
    pickle = security_cases._proto(2) + security_cases._call("os", "system", "true")  # no STOP: cut short
    path.write_bytes(pickle)
    status, out, err = _run("validate", str(path))
    assert (status, out) == (2, "")
    assert err.count("\n") == 1
    assert "its pickles name os.system" in err


TRAINER = DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-4"


@pytest.fixture
def sharded(tmp_path: pathlib.Path) -> pathlib.Path:
    """ckptkeys' own export of the Trainer save, in shards of at most 20 KB, with its index."""
    out = tmp_path / "weights"
    assert ckptkeys.export(TRAINER, out, max_shard_size=20_000).sharded
    return out


def _found(folder: pathlib.Path) -> list[tuple[str, str, str]]:
    return [(p.severity, p.code, pathlib.Path(p.file or "").name) for p in ckptkeys.validate(folder)]


def test_a_truncated_model_safetensors_beside_a_healthy_index_is_read(sharded: pathlib.Path) -> None:
    """transformers loads model.safetensors first: a broken one fails it, whatever the index says."""
    content = TRAINER_WEIGHTS.read_bytes()
    (sharded / "model.safetensors").write_bytes(content[:-100])
    found = _found(sharded)
    assert ("error", "unreadable-file", "model.safetensors") in found
    assert ("warning", "shadowed-weights", "model.safetensors.index.json") in found
    status, out, _ = _run("validate", str(sharded))
    assert status == 1 and "transformers loads model.safetensors and never reads model.safetensors.index.json" in out


def test_the_same_weights_twice_is_a_warning_another_model_s_an_error(
    sharded: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    assert not ckptkeys.export(TRAINER, tmp_path / "single", dtype="bf16").sharded  # the same tensors, another dtype
    shutil.copyfile(tmp_path / "single" / "model.safetensors", sharded / "model.safetensors")
    shadowed = "model.safetensors.index.json"
    assert [f for f in _found(sharded) if f[0] != "info"] == [("warning", "shadowed-weights", shadowed)]
    (info,) = [p for p in ckptkeys.validate(sharded) if p.code == "not-deepspeed"]
    listed = len(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"])
    said = f"shard(s) with model.safetensors.index.json, and model.safetensors, {2 * listed} tensors in all"
    assert said in info.message  # each tensor twice: the shards' and model.safetensors'
    other = {"other.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    text = json.dumps(other).encode()
    (sharded / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    assert [f for f in _found(sharded) if f[0] != "info"] == [("error", "shadowed-weights", shadowed)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xef\xbb\xbf", "Unexpected UTF-8 BOM"),  # transformers: JSONDecodeError
        (None, "has an empty weight_map"),  # transformers: IndexError
    ],
)
def test_an_index_transformers_cannot_read_is_unreadable(
    sharded: pathlib.Path, content: bytes | None, says: str
) -> None:
    index = sharded / "model.safetensors.index.json"
    if content is None:
        document = json.loads(index.read_text())
        document["weight_map"] = {}
        index.write_text(json.dumps(document))
    else:
        index.write_bytes(content + index.read_bytes())
    (unreadable,) = [p for p in ckptkeys.validate(sharded) if p.code == "unreadable-index"]
    assert unreadable.severity == "error" and says in unreadable.message
    assert _run("validate", str(sharded))[0] == 1


def test_an_empty_tag_folder_beside_model_weights_is_an_unfinished_save(tmp_path: pathlib.Path) -> None:
    """A Trainer checkpoint-N/ whose DeepSpeed save did not finish: global_stepN/ empty, no latest."""
    save = tmp_path / "checkpoint-4"
    shutil.copytree(TRAINER, save, ignore=shutil.ignore_patterns("global_step*", "latest"))
    assert [p.code for p in ckptkeys.validate(save)] == ["not-deepspeed"]  # model weights only: fine
    (save / "global_step4").mkdir()
    (problem,) = [p for p in ckptkeys.validate(save) if p.code == "incomplete-tag"]
    assert problem.severity == "error" and problem.file == str(save / "global_step4")
    assert problem.message == "an empty tag folder: a DeepSpeed save that did not finish?"
    status, out, _ = _run("validate", str(save))
    assert status == 1 and "incomplete-tag" in out
    # A tag folder's name holding no DeepSpeed file (a Trainer's resume globs global_step* all the same).
    (save / "global_step4" / "notes.txt").write_text("x")
    (problem,) = [p for p in ckptkeys.validate(save) if p.code == "incomplete-tag"]
    assert problem.message == "a tag folder's name, but no DeepSpeed file: a DeepSpeed save that did not finish?"
    # The re-check red team: the tag folder a symlink to an empty folder (inside or out) passed unmentioned.
    shutil.rmtree(save / "global_step4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (save / "global_step4").symlink_to(elsewhere)
    (problem,) = [p for p in ckptkeys.validate(save) if p.code == "incomplete-tag"]
    assert problem.severity == "error" and "a symlink to" in problem.message and "not followed" in problem.message


# Characters a name may hold that must not reach the terminal raw: C0 (with \n, \r, ESC), DEL, C1,
# the Unicode line and paragraph separators, bidi overrides.
_CONTROLS = st.sampled_from(["\n", "\r", "\x1b", "\x1b[2J", "\x00", "\x7f", "\x85", "\u2028", "\u202e", "\t"])
_NAMES = st.lists(
    st.one_of(_CONTROLS, st.text("abz.\\' ", min_size=1, max_size=4)), min_size=1, max_size=6
).map("".join)


def _safetensors(names: list[str], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(4 * len(names))


def _one_line_each(out: str) -> None:
    assert not _UNSAFE_OUT.search(out.replace("\n", ""))  # nothing a terminal acts on, no line forged
    assert not [line for line in out.splitlines() if line.startswith(("errors (0)", "  all good", "errors (1):\n"))]


_UNSAFE_OUT = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202e]")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES, key=_NAMES, value=_NAMES)
def test_names_from_a_file_are_shown_escaped(tmp_path: pathlib.Path, name: str, key: str, value: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(_safetensors([name, name + "x"], {key: value}))
    benign = tmp_path / "benign.safetensors"
    benign.write_bytes(_safetensors(["a", "ax"], {"k": "v"}))
    for command in ("inspect", "validate"):
        status, out, _ = _run(command, str(path))
        assert status == 0
        _one_line_each(out)
        assert out.count("\n") == _run(command, str(benign))[1].count("\n")  # one line per name, as any name's
        assert command == "validate" or shown(name) in out  # inspect lists the names
    # The JSON keeps the exact strings.
    document = json.loads(_run("inspect", "--json", str(path))[1])
    assert [t["name"] for t in document["files"][0]["safetensors"]["tensors"]] == [name, name + "x"]
    assert document["files"][0]["safetensors"]["metadata"] == {key: value}


def test_an_index_naming_a_shard_with_a_line_break_forges_no_line(sharded: pathlib.Path) -> None:
    index = sharded / "model.safetensors.index.json"
    document = json.loads(index.read_text())
    document["weight_map"]["extra.weight"] = "model-9.safetensors\nerrors (0):\n  all good: no problems\x1b[31m"
    index.write_text(json.dumps(document))
    status, out, _ = _run("validate", str(sharded))
    assert status == 1
    _one_line_each(out)
    assert "missing-shard" in out and "model-9.safetensors\\nerrors (0):" in out


def test_a_read_error_naming_a_tensor_is_one_escaped_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.safetensors"
    text = json.dumps({"w\n\x1b[2Jerrors (0):": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    status, out, err = _run("validate", str(path))
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and "\x1b" not in err and "\\x1b[2J" in err


def test_a_global_named_with_control_characters_is_escaped_on_stderr_exact_in_json(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pt"
    module = "os\n\x1b[2Jerrors (0):"
    pickle = security_cases._proto(4) + security_cases._call(module, "system", "true", stack=True)  # no STOP
    path.write_bytes(pickle)
    status, out, err = _run("validate", str(path))
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and "\x1b" not in err
    assert f"its pickles name {shown(module)}.system" in err
    status, out, _ = _run("validate", "--json", str(path))
    error = json.loads(out)["error"]
    assert status == 2 and f"its pickles name {module}.system" in error["message"]
    assert [g["name"] for g in error["globals"]] == [f"{module}.system"]
