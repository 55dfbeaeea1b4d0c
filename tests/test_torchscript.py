"""TorchScript archives are refused as code execution, exactly where torch takes a zip for one.

``torch.load`` hands an archive with a ``<folder>/constants.pkl`` record to ``torch.jit.load``,
which runs the archive's compiled code whatever ``data.pkl`` holds. ckptkeys refuses it unread
(``TorchScriptArchiveError``, problem ``torchscript-archive``); an archive torch does not take for
TorchScript is read as before. Also: records miniz "extracts" without writing a byte are refused.
Without torch; tests/test_torch_branches.py checks the same bytes against torch.
"""

from __future__ import annotations

import collections
import json
import pathlib
import pickle
import shutil

import pytest

import ckptkeys
from ckptkeys._cli import _main as _cli

from .conftest import DATA, FIXTURES
from .security_cases import zip_archive
from .test_security import flagged, inspect_json
from .torchscript_cases import Variant, mark_central, torchscript_variants

VARIANTS = torchscript_variants("/nonexistent-canaries")


def _write(tmp_path: pathlib.Path, data: bytes) -> pathlib.Path:
    path = tmp_path / "mp_rank_00_model_states.pt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.torchscript], ids=lambda v: v.name)
def test_archive_torch_takes_for_torchscript_is_refused(variant: Variant, tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, variant.data)
    with pytest.raises(ckptkeys.TorchScriptArchiveError) as raised:
        ckptkeys.read(path)
    error = raised.value
    assert isinstance(error, ckptkeys.UnsupportedFormatError)
    assert error.path == str(path) and "/constants.pkl" in error.record
    assert "torch.jit.load" in error.reason and "runs it" in error.reason
    assert error.globals == ()  # data.pkl is not read: torch.load never unpickles it


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.torchscript is False], ids=lambda v: v.name)
def test_archive_torch_reads_as_a_checkpoint_is_read(variant: Variant, tmp_path: pathlib.Path) -> None:
    checkpoint = ckptkeys.read(_write(tmp_path, variant.data))
    assert checkpoint.data["dp_world_size"] == 1


def test_archive_torch_fails_on_is_not_torchscript(tmp_path: pathlib.Path) -> None:
    outside = next(v for v in VARIANTS if v.name == "other-folder")
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="outside the archive's folder"):
        ckptkeys.read(_write(tmp_path, outside.data))


def test_refusal_survives_pickling() -> None:
    error = ckptkeys.TorchScriptArchiveError("x.pt", "archive/constants.pkl")
    error.globals = ()
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.path, again.record, str(again)) == (type(error), "x.pt", error.record, str(error))


@pytest.mark.parametrize("name", ["benign-data", "parameter-class"])
def test_inspect_reports_code_execution_and_fails(
    name: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, next(v for v in VARIANTS if v.name == name).data)
    status, document = inspect_json(path, capsys)
    assert status != 0 and flagged(status, document)
    assert document["error"]["type"] == "TorchScriptArchiveError"
    assert document["error"]["code"] == "torchscript-archive"
    assert "torch.jit.load" in document["error"]["message"]


def test_validate_reports_a_torchscript_archive_in_a_tag(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = tmp_path / "global_step1"
    shutil.copytree(FIXTURES / "z0_fp32_ws1" / "global_step3", tag)
    (tag / "mp_rank_00_model_states.pt").write_bytes(next(v for v in VARIANTS if v.name == "benign-data").data)
    status, document = inspect_json(tag, capsys, "validate")
    assert status == 1
    problems = document["problems"] + [p for t in document["tags"] for p in t["problems"]]
    found = [p for p in problems if p["code"] == "torchscript-archive"]
    assert [p["severity"] for p in found] == ["error"]
    assert "mp_rank_00_model_states.pt" in json.dumps(found) and "torch.jit.load" in found[0]["message"]


def test_text_output_names_what_torch_would_do(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, next(v for v in VARIANTS if v.name == "only-constants").data)
    assert _cli.main(["inspect", str(path)]) != 0
    assert "TorchScript archive" in capsys.readouterr().err


# -- records miniz extracts without writing -------------------------------------------------------


def _sample() -> bytes:
    return (DATA / "torch" / "sample_zip.pt").read_bytes()


def _storage_name(data: bytes) -> bytes:
    start = data.index(b"/data/0")
    return data[data.rindex(b"\0", 0, start) + 1 : start] + b"/data/0"


@pytest.mark.parametrize("record", ["storage", "data.pkl"])
def test_record_marked_as_a_directory_is_refused(record: str, tmp_path: pathlib.Path) -> None:
    data = _sample()
    name = _storage_name(data) if record == "storage" else _storage_name(data).replace(b"/data/0", b"/data.pkl")
    path = _write(tmp_path, mark_central(data, name, external=0x10))  # the DOS directory attribute
    error_type = ckptkeys.CorruptCheckpointError if record == "storage" else ckptkeys.AmbiguousFileError
    with pytest.raises(error_type, match="marked as a directory") as raised:
        ckptkeys.read(path)
    if record == "storage":  # found after the pickle was read: the refusal carries its globals
        assert raised.value.globals


def test_pickle_of_zero_compressed_bytes_is_refused(tmp_path: pathlib.Path) -> None:
    data = zip_archive([(b"archive/data.pkl", pickle.dumps({"a": 1}, protocol=2)), (b"archive/version", b"3\n")])
    path = _write(tmp_path, mark_central(data, b"archive/data.pkl", compressed=0))
    with pytest.raises(ckptkeys.AmbiguousFileError, match="uninitialised buffer"):
        ckptkeys.read(path)


def test_empty_directory_entry_is_harmless(tmp_path: pathlib.Path) -> None:
    members = [(b"archive/data.pkl", pickle.dumps({"a": 1}, protocol=2)), (b"archive/data/", b"")]
    assert ckptkeys.read(_write(tmp_path, zip_archive(members))).data == {"a": 1}



def deflated_past_its_size() -> bytes:
    """A zip whose deflated data.pkl inflates to a pickle and more bytes than its entry declares."""
    pkl = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    members = [(b"archive/data.pkl", pkl + b"\xc9 bytes past the declared size"), (b"archive/version", b"3\n")]
    return mark_central(zip_archive(members, method=8), b"archive/data.pkl", size=len(pkl))


def test_deflate_stream_longer_than_declared_is_read_as_miniz_reads_it(tmp_path: pathlib.Path) -> None:
    """miniz fills torch's buffer of the declared size and stops: the pickle is those bytes, then the refusal."""
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="inflates to more than") as raised:
        ckptkeys.read(_write(tmp_path, deflated_past_its_size()))
    assert not isinstance(raised.value, ckptkeys.AmbiguousFileError)
    assert [ref.qualname for ref in raised.value.globals] == ["collections.OrderedDict"]  # what torch resolves
