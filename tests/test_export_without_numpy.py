"""Export without numpy: bfloat16 -> float32 by byte moves, bit-identical with torch, so that the
default export of a bf16 save works; every other cast refused before anything is written, with
what will work for that checkpoint. The "without numpy" runs are child processes whose imports of
numpy fail as a missing package does (a meta-path finder), on every interpreter of the suite."""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys

import pytest

import ckptkeys
from ckptkeys._export import _cast
from ckptkeys._export._spans import FileSpan
from ckptkeys._export._types import ExportTensor

from .conftest import FIXTURES

SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
BF16 = "z2_bf16_ws2"  # frozen bf16 parameters, fp32 masters and buffers (tests/data/fixtures/README.md)
NO_NUMPY = """
import importlib.abc, sys
class NoNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoNumpy())
"""
EVERY_BFLOAT16 = struct.pack("<65536H", *range(65536))  # every pattern: ±0, subnormals, ±inf, NaNs


def _child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", NO_NUMPY + code, *args], env=env, capture_output=True, text=True, check=False
    )


def test_bfloat16_to_float32_is_the_bits_followed_by_sixteen_zero_bits() -> None:
    out = bytes(_cast._bfloat16_to_float32(memoryview(bytearray(EVERY_BFLOAT16))))
    assert out == b"".join(struct.pack("<I", bits << 16) for bits in range(65536))


def test_bfloat16_to_float32_without_numpy_is_torchs() -> None:
    torch = pytest.importorskip("torch")
    theirs = torch.frombuffer(bytearray(EVERY_BFLOAT16), dtype=torch.bfloat16).to(torch.float32)
    ours = bytes(_cast._bfloat16_to_float32(EVERY_BFLOAT16))
    assert ours == theirs.numpy().tobytes()  # NaN payloads, signalling NaNs, -0.0 and subnormals included


def test_bfloat16_to_float32_with_numpy_is_the_same() -> None:
    pytest.importorskip("numpy")
    with_numpy = bytes(_cast.cast_bytes(EVERY_BFLOAT16, "bfloat16", "float32"))
    assert with_numpy == bytes(_cast._bfloat16_to_float32(EVERY_BFLOAT16))


def test_the_default_export_of_a_bf16_save_needs_no_numpy(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    code = (
        "import sys, ckptkeys; from ckptkeys._cli._main import main; status = main(sys.argv[1:]); "
        "assert 'numpy' not in sys.modules; sys.exit(status)"
    )
    done = _child(code, "export", str(FIXTURES / BF16), str(out), "-q")
    assert done.returncode == 0, done.stderr
    plan = ckptkeys.plan_export(FIXTURES / BF16)
    frozen = [t for t in plan.tensors if t.source_dtype == "bfloat16"]
    assert frozen and all(t.dtype == "float32" for t in frozen)
    raw = (out / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    for tensor in frozen:  # each element: its bf16 bits, then 16 zero bits
        source = b"".join(_read(span) for span in tensor.sources)
        begin, end = header[tensor.name]["data_offsets"]
        expected = b"".join(struct.pack("<I", bits << 16) for (bits,) in struct.iter_unpack("<H", source))
        assert data[begin:end] == expected, tensor.name
    if sys.version_info[:2] == (3, 11):  # the same bytes as an export with numpy (installed there)
        pytest.importorskip("numpy")
        ckptkeys.export(FIXTURES / BF16, tmp_path / "numpy")
        assert (tmp_path / "numpy" / "model.safetensors").read_bytes() == raw


def _read(span: FileSpan) -> bytes:
    with open(span.path, "rb") as stream:
        stream.seek(span.offset)
        return stream.read(span.length)


def test_a_cast_that_needs_numpy_says_what_will_work_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    code = "import sys\nfrom ckptkeys._cli._main import main\nsys.exit(main(sys.argv[1:]))"
    done = _child(code, "export", str(FIXTURES / BF16), str(out), "-q", "--dtype", "auto")
    assert done.returncode == 2, done.stderr
    plan = ckptkeys.plan_export(FIXTURES / BF16, dtype="auto")
    first = next(t.name for t in plan.tensors if t.source_dtype != t.dtype)  # the masters: float32 -> bfloat16
    assert done.stderr == (
        f"ckptkeys export: {plan.checkpoint}: casting {first!r} from float32 to bfloat16 needs numpy, which is not "
        "installed: pip install numpy (from a checkout of ckptkeys: pip install '.[export]'); or --dtype fp32, "
        "which needs no numpy for this checkpoint\n"
    )
    assert not out.exists()
    api = (
        "import sys, ckptkeys\n"
        "try:\n    ckptkeys.export(sys.argv[1], sys.argv[2], dtype='auto')\n"
        "except ckptkeys.ExportError as error:\n    print(error.option, error.reason)\n"
    )
    done = _child(api, str(FIXTURES / BF16), str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"dtype casting {first!r} from float32 to bfloat16 needs numpy")
    assert "--dtype" not in done.stdout and "dtype=" not in done.stdout  # the API's message names no option
    assert not out.exists()


def test_averaging_without_numpy_is_refused_before_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises ImportError
    span = FileSpan("rank.pt", 0, 16)
    mean = ExportTensor("w", (4,), "float32", "float32", (), "trainable", mean_of=((span,), (span,)))
    copy = ExportTensor("b", (4,), "float32", "float32", (span,), "trainable")
    with pytest.raises(_cast.NumpyMissingError, match=r"averaging the tensor-parallel slices of 'w' needs numpy") as e:
        _cast.check_numpy("tag", [copy, mean])
    assert e.value.ways == () and e.value.option is None  # at write time no other export is planned to try
    _cast.check_numpy("tag", [copy])  # copies need nothing
    cast = ExportTensor("f", (4,), "float32", "bfloat16", (span,), "frozen")
    _cast.check_numpy("tag", [copy, cast])  # bfloat16 -> float32 needs nothing either


# Every refusal for a missing numpy, on the fixtures, with every --weights and --dtype (and
# --tp-rank 0 for the tensor-parallel one): the way out it offers, run without numpy, exports.
EVERY_REFUSAL = r"""
import contextlib, io, itertools, json, os, sys
import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._export._cast import NumpyMissingError

fixture, out_root, bases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
TYPED = {"dtype": "--dtype", "weights": "--weights", "tp_rank": "--tp-rank"}
results, runs = [], itertools.count()

def run(options):
    argv = ["export", fixture, os.path.join(out_root, str(next(runs))), "-q"]
    for key, value in options.items():
        argv += [TYPED[key], str(value)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()

for base in bases:
    for weights, dtype in itertools.product(("masters", "module"), ("fp32", "bf16", "fp16", "auto")):
        options = {**base, "weights": weights, "dtype": dtype}
        try:
            ckptkeys.plan_export(fixture, **options)
            outcome = "planned"
            ways = []
        except NumpyMissingError as error:
            outcome = "numpy"
            ways = [dict(way) for way in error.ways]
        except ckptkeys.ExportError:
            outcome = "other"
            ways = []
        status, message = run(options)
        tried = [(way, run({**options, **way})) for way in ways]
        results.append({"options": options, "outcome": outcome, "status": status, "message": message,
                        "tried": tried})
assert "numpy" not in sys.modules
print(json.dumps(results))
"""
NUMPY_CASES = [
    ("z1_fp16_ws2", [{}]),
    ("z0_fp16_ws1", [{}]),
    ("z0_fp32_ws1", [{}]),
    ("z1_bf16_ws1", [{}]),
    ("z2_bf16_ws2", [{}]),
    ("tp2_z1_bf16", [{}, {"tp_rank": 0}]),
    ("pp2_z1_bf16", [{}]),
]


@pytest.mark.parametrize(("fixture", "bases"), NUMPY_CASES, ids=[name for name, _ in NUMPY_CASES])
def test_every_way_out_a_numpy_refusal_offers_exports_without_numpy(
    fixture: str, bases: list[dict[str, object]], tmp_path: pathlib.Path
) -> None:
    done = _child(EVERY_REFUSAL, str(FIXTURES / fixture), str(tmp_path), json.dumps(bases))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for result in results:
        if result["outcome"] == "planned":
            assert result["status"] == 0, result
        if result["outcome"] != "numpy":
            continue
        assert result["status"] == 2, result  # one code path: usage (install numpy, or other options)
        assert "needs numpy, which is not installed" in result["message"], result
        for way, (status, message) in result["tried"]:
            assert status == 0, (result["options"], way, message)
            for key, value in way.items():  # offered as typed
                assert f"--{key.replace('_', '-')} {value}" in result["message"], (way, result["message"])
        if not result["tried"]:  # nothing offered: nothing of the same base exports without numpy
            base = {k: v for k, v in result["options"].items() if k not in ("weights", "dtype")}
            same_base = [r for r in results if {k: r["options"].get(k) for k in base} == base]
            assert all(r["outcome"] != "planned" for r in same_base), result
            assert "; or " not in result["message"], result


def test_the_numpy_refusals_cover_both_outcomes(tmp_path: pathlib.Path) -> None:
    """The cases above are not vacuous: refusals with a way out and without one both occur."""
    offered = refused_alone = 0
    for fixture in ("z1_fp16_ws2", "pp2_z1_bf16"):
        done = _child(EVERY_REFUSAL, str(FIXTURES / fixture), str(tmp_path / fixture), json.dumps([{}]))
        assert done.returncode == 0, done.stderr
        for result in json.loads(done.stdout):
            if result["outcome"] == "numpy":
                offered += bool(result["tried"])
                refused_alone += not result["tried"]
    assert offered and refused_alone
