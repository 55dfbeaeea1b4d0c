"""Branches of torch 2.13's ``torch.load`` against ckptkeys, on the same bytes (CI on 3.11 with torch).

The rows of docs/security.md's branch table that need torch: TorchScript dispatch (torch's own
``_is_torchscript_zip`` on every variant of tests/torchscript_cases.py, the canary of each payload,
and a module made by ``torch.jit.save``), records miniz extracts without writing, the
``weights_only`` switches and the ``.safetensors`` suffix. Each load of a payload runs in a
subprocess, as in tests/test_security_torch.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli import _main as _cli
from ckptkeys._read import _globals

from . import differential
from .conftest import DATA
from .security_cases import zip_archive
from .test_security import flagged
from .torchscript_cases import Variant, mark_central, torchscript_variants

torch = pytest.importorskip("torch")

@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Variant, pathlib.Path, bool]]:
    """Each variant's file and whether its canary appeared under torch.load(weights_only=False)."""
    root = tmp_path_factory.mktemp("torchscript")
    canaries = root / "canaries"
    canaries.mkdir()
    built = torchscript_variants(str(canaries))
    paths = []
    for variant in built:
        path = root / f"{variant.name}.pt"
        path.write_bytes(variant.data)
        paths.append(path)
    differential.torch_load_all(paths, root)
    ran = {p.name for p in canaries.iterdir()}
    canary_of = {"parameter-class": "parameter"}
    return [(v, p, canary_of.get(v.name, v.name) in ran) for v, p in zip(built, paths, strict=True)]


def _torch_says_torchscript(path: pathlib.Path) -> bool | None:
    """torch.serialization._is_torchscript_zip on the file; None where torch's own check raises."""
    from torch.serialization import _is_torchscript_zip

    try:
        return bool(_is_torchscript_zip(torch._C.PyTorchFileReader(str(path))))
    except (RuntimeError, UnicodeDecodeError):
        return None


def _ckptkeys_refuses_as_torchscript(path: pathlib.Path) -> bool:
    try:
        ckptkeys.read(path)
    except ckptkeys.TorchScriptArchiveError:
        return True
    except ckptkeys.ReadError:
        return False
    return False


def test_ckptkeys_recognises_exactly_what_torch_recognises(variants: list[tuple[Variant, pathlib.Path, bool]]) -> None:
    seen = {}
    for variant, path, _ in variants:
        torch_says = _torch_says_torchscript(path)
        assert torch_says == variant.torchscript, variant.name
        assert _ckptkeys_refuses_as_torchscript(path) == bool(torch_says), variant.name
        seen[torch_says] = True
    assert set(seen) == {True, False, None}  # each kind of answer is among the variants


def test_payloads_run_where_the_variant_says_and_are_flagged(
    variants: list[tuple[Variant, pathlib.Path, bool]], capsys: pytest.CaptureFixture[str]
) -> None:
    ran_count = 0
    for variant, path, ran in variants:
        assert ran == variant.runs, variant.name
        ran_count += ran
        if ran:
            status = _cli.main(["inspect", "--json", str(path)])
            document = json.loads(capsys.readouterr().out)
            assert flagged(status, document) and document["error"]["code"] == "torchscript-archive", variant.name
    assert ran_count == 2  # the control: both payloads run under torch


_SCRIPTED = """
import sys
from typing import Tuple
import torch


class Module(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.marker = torch.zeros(1, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.marker = torch.from_file(self.path, shared=True, size=1, dtype=torch.uint8)


torch.jit.save(torch.jit.script(Module(sys.argv[2])), sys.argv[1])
"""


def test_jit_saved_module_runs_under_torch_load_and_is_flagged(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, canary, script = tmp_path / "model.pt", tmp_path / "canary", tmp_path / "make_module.py"
    script.write_text(_SCRIPTED, encoding="utf-8")  # torch.jit.script reads the class's source file
    subprocess.run([sys.executable, str(script), str(path), str(canary)], check=True, timeout=300, capture_output=True)
    assert not canary.exists()  # saving runs nothing
    differential.torch_load_all([path], tmp_path)
    assert canary.exists()  # torch.load -> torch.jit.load -> __setstate__
    status = _cli.main(["inspect", "--json", str(path)])
    document = json.loads(capsys.readouterr().out)
    assert flagged(status, document) and document["error"]["code"] == "torchscript-archive"


def test_storage_record_marked_as_a_directory_loads_in_torch_and_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    torch.save({"w": torch.arange(64.0)}, path)
    path.write_bytes(mark_central(path.read_bytes(), b"file/data/0", external=0x10))  # DOS directory attribute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.load(path, weights_only=True)  # no error: the 256 bytes are whatever memory held
    assert loaded["w"].shape == (64,)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="marked as a directory"):
        ckptkeys.read(path)


@pytest.mark.parametrize("variable", ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"])
def test_weights_only_switches_change_nothing_ckptkeys_reports(
    variable: str, tmp_path: pathlib.Path
) -> None:
    """The environment decides whether torch runs the payload; ckptkeys reports it either way."""
    copy = tmp_path / "benign-data.pt"
    copy.write_bytes(next(v for v in torchscript_variants(str(tmp_path)) if v.name == "benign-data").data)
    code = "import sys, torch\ntry:\n    torch.load(sys.argv[1])\nexcept BaseException:\n    pass\n"
    env = {**os.environ, variable: "1"}
    subprocess.run([sys.executable, "-c", code, str(copy)], env=env, capture_output=True, check=True, timeout=300)
    # weights_only=None: forced off, torch.jit.load runs the payload; forced on, torch refuses it.
    assert (tmp_path / "benign-data").exists() == (variable == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    with pytest.raises(ckptkeys.TorchScriptArchiveError):
        ckptkeys.read(copy)


def test_safetensors_suffix_is_read_by_bytes_not_by_name(tmp_path: pathlib.Path) -> None:
    """torch.load reads a path ending in .safetensors with safetensors; ckptkeys reads what the bytes are."""
    pytest.importorskip("safetensors")
    path = tmp_path / "model.safetensors"
    path.write_bytes((DATA / "torch" / "sample_zip.pt").read_bytes())
    with pytest.raises(Exception):  # torch hands it to safetensors, which cannot read a zip
        torch.load(path, weights_only=True)
    assert ckptkeys.read(path).format == "zip"  # a torch zip is shown as one, globals and all


# -- the rebuild functions and persistent ids, on files torch itself writes ----------------------


def _kinds() -> dict[str, Any]:
    """One object per rebuild path of torch/_utils.py and torch/_tensor.py that torch.save writes."""
    t = torch.arange(6.0).reshape(2, 3)
    param = torch.nn.Parameter(t.clone())
    param.note = "state"  # _rebuild_parameter_with_state, _set_obj_state
    scales, zeros = torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0, 0])
    return {
        "views-of-one-storage": {"a": t, "b": t[1], "c": t.t()},
        "sparse-coo": t.to_sparse(),
        "sparse-csr": t.to_sparse_csr(),
        "quantized-per-tensor": torch.quantize_per_tensor(t, 0.1, 0, torch.quint8),
        "quantized-per-channel": torch.quantize_per_channel(t, scales, zeros, 0, torch.quint8),
        "nested": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "meta": torch.empty(2, 3, device="meta"),
        "parameter-with-state": param,
        "layout": torch.sparse_coo,
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", list(_kinds()))
def test_every_rebuild_path_torch_writes_is_read_and_reported(kind: str, legacy: bool, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    try:
        torch.save(_kinds()[kind], path, _use_new_zipfile_serialization=not legacy)
    except (RuntimeError, NotImplementedError, TypeError) as error:  # torch cannot write it in this format
        pytest.skip(f"torch.save: {error}")
    checkpoint = ckptkeys.read(path)
    assert checkpoint.format == ("legacy" if legacy else "zip")
    assert differential.findings(str(path)) == []  # every global torch resolves is reported
    all_allowed = all(_globals.classify(ref) == "allowed" for ref in checkpoint.globals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.load(path, weights_only=True)
            refused = ""
        except pickle.UnpicklingError as error:  # the weights-only unpickler's refusal (not a data error)
            refused = str(error)
        except Exception:  # torch failing on its own data (a nested tensor, at times): no claim either way
            refused = ""
    if all_allowed:  # "allowed" is torch's word: weights_only=True accepts what names only allowed globals
        assert not refused, refused


def _rezip(source: pathlib.Path, target: pathlib.Path, byteorder: bytes | None) -> None:
    """``source``'s records in a new zip (stored), with its byteorder record replaced or left out."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename.endswith("/byteorder"):
                if byteorder is not None:
                    new.writestr(info.filename, byteorder)
                continue
            new.writestr(info.filename, old.read(info))


@pytest.mark.parametrize("byteorder", [b"little", b"big", None, b"middle"])
def test_byteorder_record_is_read_as_torch_reads_it(byteorder: bytes | None, tmp_path: pathlib.Path) -> None:
    saved, path = tmp_path / "saved.pt", tmp_path / "file.pt"
    torch.save({"w": torch.arange(4, dtype=torch.int32)}, saved)
    _rezip(saved, path, byteorder)
    if byteorder == b"middle":
        with pytest.raises(ValueError, match="Unknown endianness"):
            torch.load(path, weights_only=True)
        with pytest.raises(ckptkeys.CorruptCheckpointError, match="byte order"):
            ckptkeys.read(path)
        return
    loaded = torch.load(path, weights_only=True)["w"]
    swapped = byteorder == b"big"  # torch byteswaps what the file says is big-endian
    assert loaded.tolist() == ([0, 1 << 24, 2 << 24, 3 << 24] if swapped else [0, 1, 2, 3])
    assert ckptkeys.read(path).byteorder == ("big" if swapped else "little")


def test_python2_strings_are_decoded_as_torch_decodes_them(tmp_path: pathlib.Path) -> None:
    """torch.load passes encoding="utf-8": STRING, BINSTRING and SHORT_BINSTRING give str."""
    pkl = b"\x80\x02}(U\x03keyq\x00T\x05\x00\x00\x00caf\xc3\xa9S'old'\nU\x01\xffu."
    path = tmp_path / "file.pt"
    path.write_bytes(zip_archive([(b"archive/data.pkl", pkl), (b"archive/version", b"3\n")]))
    with pytest.raises(UnicodeDecodeError):  # b"\xff" is no UTF-8: torch fails on it (benign file: no globals)
        torch.load(path, weights_only=False)
    fixed = pkl.replace(b"U\x01\xff", b"U\x01n")
    path.write_bytes(zip_archive([(b"archive/data.pkl", fixed), (b"archive/version", b"3\n")]))
    assert ckptkeys.read(path).data == torch.load(path, weights_only=False) == {"key": "café", "old": "n"}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_persistent_id_of_bytes_is_read_like_torch_or_refused(legacy: bool, tmp_path: pathlib.Path) -> None:
    """torch decodes a bytes typename and location (_maybe_decode_ascii); ckptkeys reads the same or refuses."""
    saved = tmp_path / "saved.pt"
    torch.save({"w": torch.arange(3.0)}, saved, _use_new_zipfile_serialization=not legacy)
    data = saved.read_bytes()
    # protocol 2 writes the typename 'storage' and location 'cpu' as BINUNICODE: make them BINBYTES.
    for text in (b"storage", b"cpu"):
        data = data.replace(b"X" + struct.pack("<I", len(text)) + text, b"B" + struct.pack("<I", len(text)) + text)
    path = tmp_path / "file.pt"
    path.write_bytes(data)  # the zip's pickle keeps its size; torch does not check CRC-32s
    assert data != saved.read_bytes()
    expected = torch.load(path, weights_only=False)["w"].tolist()  # benign: built here from torch.save
    try:
        checkpoint = ckptkeys.read(path)
    except ckptkeys.ReadError:
        return  # refused: never read another way
    assert checkpoint.data["w"].shape == (len(expected),)


@pytest.mark.parametrize("change", ["no-version-record", "bad-storage-alignment"])
def test_file_torch_refuses_before_its_pickle_is_still_shown(change: str, tmp_path: pathlib.Path) -> None:
    """PyTorchStreamReader wants a version record, _load an int in .storage_alignment: ckptkeys shows the pickle."""
    saved, path = tmp_path / "saved.pt", tmp_path / "file.pt"
    torch.save({"w": torch.arange(4.0)}, saved)
    with zipfile.ZipFile(saved) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            if change == "no-version-record" and info.filename.endswith("/version"):
                continue
            bad = change == "bad-storage-alignment" and info.filename.endswith("/.storage_alignment")
            new.writestr(info.filename, b"sixty-four" if bad else old.read(info))
    with pytest.raises((RuntimeError, ValueError)):
        torch.load(path, weights_only=True)
    assert ckptkeys.read(path).data["w"].shape == (4,)  # more than torch shows, never less


_DEEPSPEED_LOAD = """
import sys, warnings
warnings.simplefilter("ignore")
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
try:
    TorchCheckpointEngine().load(sys.argv[1], map_location="cpu")
except BaseException:
    pass
"""


@pytest.mark.deepspeed
def test_deepspeed_checkpoint_engine_runs_a_torchscript_payload(tmp_path: pathlib.Path) -> None:
    """DeepSpeed's own engine loads with weights_only=False: the payload beside a benign data.pkl runs."""
    pytest.importorskip("deepspeed")
    variant = next(v for v in torchscript_variants(str(tmp_path)) if v.name == "benign-data")
    path = tmp_path / "mp_rank_00_model_states.pt"
    path.write_bytes(variant.data)
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    subprocess.run([sys.executable, "-c", _DEEPSPEED_LOAD, str(path)], cwd=tmp_path, env=env, check=True, timeout=600)
    assert (tmp_path / "benign-data").exists()
    with pytest.raises(ckptkeys.TorchScriptArchiveError):
        ckptkeys.read(path)


def test_deflate_stream_longer_than_declared_gives_torch_the_declared_bytes(tmp_path: pathlib.Path) -> None:
    """The fuzzer's finding: torch unpickles the first bytes of an over-long deflate stream; ckptkeys reads them too."""
    from .test_torchscript import deflated_past_its_size

    path = tmp_path / "file.pt"
    path.write_bytes(deflated_past_its_size())
    assert torch.load(path, weights_only=True) == {"a": 1}
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="inflates to more than") as raised:
        ckptkeys.read(path)
    assert [ref.qualname for ref in raised.value.globals] == ["collections.OrderedDict"]
