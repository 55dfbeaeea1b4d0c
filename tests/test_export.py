"""ckptkeys export without torch: plans, the safetensors format, sharding and bad input.

The values themselves are proven against DeepSpeed's zero_to_fp32 and torch in
tests/test_export_deepspeed.py and tests/test_cast.py; here every file written is parsed by
the format's specification (8-byte length, JSON header, back-to-back data) independently of
the writer.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import shutil
import struct
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys import Dtype, ExportError, export, plan_export
from ckptkeys._cli._main import main
from ckptkeys._export._types import parse_size

from .conftest import FIXTURES

EXPORTABLE = [
    "z0_fp32_ws1",
    "z0_fp16_ws1",
    "z1_bf16_ws1",
    "z1_fp16_ws2",
    "z2_bf16_ws2",
    "z3_bf16_ws2",
    "uc_z2_bf16_ws2",
]
EVERY_FIXTURE = [*EXPORTABLE, "pp2_z1_bf16", "moe_z2_fp32_ep2"]
# Exports that cast (bf16/fp16 sources to fp32) need numpy, the ckptkeys[export] extra.
needs_numpy = pytest.mark.skipif(
    importlib.util.find_spec("numpy") is None, reason="casts need numpy (pip install 'ckptkeys[export]')"
)
ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def _parse(path: pathlib.Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], bytes]:
    """A safetensors file by the specification: header entries, metadata and the data bytes."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert (8 + length) % 8 == 0  # the data starts 8-byte aligned
    metadata = header.pop("__metadata__", {})
    data = raw[8 + length :]
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    end = 0
    for begin, stop in spans:  # back to back, no gaps, no overlap, nothing after
        assert begin == end
        end = stop
    assert end == len(data)
    return header, metadata, data


def _module_names(folder: pathlib.Path) -> list[str]:
    tag = ckptkeys.scan(folder, read=True).tags[0]
    model = next(c for name, c in tag.checkpoints.items() if "model_states" in name)
    return list(model.data["module"])


@pytest.mark.parametrize("name", EXPORTABLE)
def test_plan_names_every_module_entry_with_its_shape(name: str) -> None:
    plan = plan_export(FIXTURES / name)
    tag = ckptkeys.scan(FIXTURES / name / "global_step3", read=True).tags[0]
    model = next(c for n, c in tag.checkpoints.items() if "model_states" in n and "zero_pp_rank_1" not in n).data
    shapes = {t.name: t.shape for t in plan.tensors}
    # The module lists every parameter and buffer (ZeRO-3 keeps empty placeholders: shapes from param_shapes).
    assert set(shapes) | set(plan.aliases) == set(model["module"])
    for key, tensor in model["module"].items():
        if plan.layout != "zero-3":
            assert shapes[plan.aliases.get(key, key)] == tensor.shape, key
    for t in plan.tensors:
        assert (
            sum(s.length for s in t.sources) == t.numel * ckptkeys.TensorInfo(t.source_dtype, (), (), 0, None).itemsize
        )


@needs_numpy
@pytest.mark.parametrize("name", EVERY_FIXTURE)
@pytest.mark.parametrize("dtype", ["fp32", "auto"])
def test_written_file_follows_the_format_and_the_plan(name: str, dtype: Dtype, tmp_path: pathlib.Path) -> None:
    plan = export(FIXTURES / name, tmp_path, dtype=dtype)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    header, metadata, data = _parse(tmp_path / "model.safetensors")
    assert metadata == {"format": "pt", "weights": "masters", "ckptkeys_plan": plan.identity()}
    assert list(header) == [t.name for t in plan.tensors]
    for t in plan.tensors:
        entry = header[t.name]
        assert ST_DTYPES[str(entry["dtype"])] == t.dtype
        assert entry["shape"] == list(t.shape)
        begin, end = entry["data_offsets"]
        assert end - begin == t.nbytes
        if t.dtype == t.source_dtype:  # a copy: the bytes are the source ranges, joined
            expected = b"".join(_bytes(s.path, s.offset, s.length) for s in t.sources)
            assert data[begin:end] == expected, t.name


def _bytes(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as stream:
        stream.seek(offset)
        return stream.read(length)


def test_auto_is_the_training_precision_and_fp32_the_default() -> None:
    assert plan_export(FIXTURES / "z2_bf16_ws2").dtype == "fp32"
    assert plan_export(FIXTURES / "z2_bf16_ws2", dtype="auto").dtype == "bf16"
    assert plan_export(FIXTURES / "z1_fp16_ws2", dtype="auto").dtype == "fp16"
    plan = plan_export(FIXTURES / "z0_fp16_ws1", dtype="auto")
    # The fp32 masters are cast to fp16 (the module's bytes: tests/test_export_zero0_deepspeed.py),
    # the frozen fp16 weights copied; the fp32 buffer follows --dtype, as zero_to_fp32's --dtype does.
    cast = {t.name for t in plan.tensors if t.dtype != t.source_dtype}
    assert cast == {"scale", "emb.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert {t.name for t in plan.tensors if t.dtype == t.source_dtype == "float16"} == {"frozen.weight", "frozen.bias"}


def test_non_float_buffers_keep_their_dtype() -> None:
    plan = plan_export(FIXTURES / "z2_bf16_ws2", dtype="bf16")
    assert {t.name: t.dtype for t in plan.tensors}["scale"] == "bfloat16"  # float buffers follow --dtype
    assert all(t.dtype == "bfloat16" for t in plan.tensors)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 5 * 10**8),
        ("2GiB", 2 * 2**30),
        ("10KiB", 10240),
        ("100", 100),
        ("1.5KB", 1500),
        ("8Gb", 10**9),  # transformers: a lowercase b is bits
        (" 3 GB ", 3 * 10**9),
        ("3gb", 375 * 10**6),  # transformers again (huggingface_hub would read 3 GB)
        (64, 64),
    ],
)
def test_shard_sizes_are_spelt_as_transformers_spells_them(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "5 parsecs", "-1", "0", "GB"])
def test_bad_shard_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@needs_numpy
def test_sharding_splits_in_order_and_writes_an_index(tmp_path: pathlib.Path) -> None:
    plan = export(FIXTURES / "z2_bf16_ws2", tmp_path, max_shard_size=400)
    sizes = {t.name: t.nbytes for t in plan.tensors}
    assert plan.sharded
    # Greedy in plan order: a shard closes when the next tensor would take it past the limit.
    for shard in plan.shards:
        assert shard.nbytes <= 400 or len(shard.tensors) == 1
    order = [n for s in plan.shards for n in s.tensors]
    assert sorted(order) == sorted(sizes)
    n = len(plan.shards)
    names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert sorted(os.listdir(tmp_path)) == [*names, "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(sizes.values())
    assert set(index["weight_map"]) == set(sizes)
    whole = export(FIXTURES / "z2_bf16_ws2", tmp_path / "whole")
    _, _, data = _parse(tmp_path / "whole" / "model.safetensors")
    single, _, _ = _parse(tmp_path / "whole" / "model.safetensors")
    for name, filename in index["weight_map"].items():
        header, _, shard_data = _parse(tmp_path / filename)
        b, e = header[name]["data_offsets"]
        wb, we = single[name]["data_offsets"]
        assert shard_data[b:e] == data[wb:we]
    assert whole.total_size == plan.total_size


def test_a_tensor_larger_than_the_limit_gets_its_own_shard() -> None:
    plan = plan_export(FIXTURES / "z2_bf16_ws2", max_shard_size=100)
    for shard in plan.shards:
        if shard.nbytes > 100:
            assert len(shard.tensors) == 1


def _copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def test_missing_rank_names_the_file(tmp_path: pathlib.Path) -> None:
    folder = _copy("z2_bf16_ws2", tmp_path)
    (folder / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    shard = r"bf16_zero_pp_rank_1_mp_rank_00_optim_states\.pt"
    with pytest.raises(ExportError, match=rf"{shard}: missing-rank: {shard} is missing"):
        plan_export(folder)
    assert main(["export", str(folder), str(tmp_path / "out"), "-q"]) == 1
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_zero3_missing_model_states_rank_names_the_file(tmp_path: pathlib.Path) -> None:
    folder = _copy("z3_bf16_ws2", tmp_path)
    (folder / "global_step3" / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    model = r"zero_pp_rank_1_mp_rank_00_model_states\.pt"
    with pytest.raises(ExportError, match=rf"{model}: missing-model-states: {model} is missing"):
        plan_export(folder)


def test_truncated_shard_names_the_file(tmp_path: pathlib.Path) -> None:
    folder = _copy("z1_fp16_ws2", tmp_path)
    shard = folder / "global_step3" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ExportError, match=r"zero_pp_rank_1_mp_rank_00_optim_states\.pt: unreadable-file: broken zip"):
        plan_export(folder)
    assert main(["export", str(folder), str(tmp_path / "out"), "-q"]) == 1


@needs_numpy
def test_file_truncated_after_planning_leaves_no_file(tmp_path: pathlib.Path) -> None:
    folder = _copy("z1_fp16_ws2", tmp_path)
    plan = plan_export(folder)
    last = max(plan.tensors, key=lambda t: t.sources[-1].offset)
    os.truncate(last.sources[-1].path, last.sources[-1].offset + 1)
    with pytest.raises(ExportError, match=os.path.basename(last.sources[-1].path)):
        ckptkeys.write_export(plan, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []  # neither model.safetensors nor a temporary file


@needs_numpy
def test_interrupted_write_leaves_no_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptkeys._export._safetensors import copy_range

    plan = plan_export(FIXTURES / "z2_bf16_ws2")
    calls = []

    def interrupted(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        copy_range(*args)

    monkeypatch.setattr("ckptkeys._export._tensor_bytes.copy_range", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckptkeys.write_export(plan, tmp_path)
    assert os.listdir(tmp_path) == []


@needs_numpy
def test_existing_output_is_kept_without_overwrite(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(ExportError, match=r"model\.safetensors: already exists"):
        export(FIXTURES / "z2_bf16_ws2", tmp_path)
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(tmp_path)]) == 2
    assert "model.safetensors: already exists" in capsys.readouterr().err
    assert (tmp_path / "model.safetensors").read_bytes() == b"precious"
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(tmp_path), "--overwrite", "-q"]) == 0
    _parse(tmp_path / "model.safetensors")


@needs_numpy
def test_overwrite_removes_the_shards_of_an_older_export(tmp_path: pathlib.Path) -> None:
    export(FIXTURES / "z2_bf16_ws2", tmp_path, max_shard_size=300)
    assert len(os.listdir(tmp_path)) > 2
    export(FIXTURES / "z2_bf16_ws2", tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_tensor_parallel_without_a_rank_names_the_way_out(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError, match="export one rank's shard as it is") as caught:
        plan_export(FIXTURES / "tp2_z1_bf16")
    assert caught.value.option == "tp_rank"  # the command names it as typed (tests/test_cli_convention.py)
    assert main(["export", str(FIXTURES / "tp2_z1_bf16"), str(tmp_path / "out")]) == 2


@needs_numpy
def test_universal_checkpoint_exports_the_same_tensors_as_its_source(tmp_path: pathlib.Path) -> None:
    """ds_to_universal's output (global_step3_universal) and the tag it came from, byte for byte."""
    folder = FIXTURES / "uc_z2_bf16_ws2"
    plan = export(folder, tmp_path / "universal", tag="global_step3_universal")
    assert plan.layout == "universal"
    export(folder, tmp_path / "source", tag="global_step3")
    ours, _, data = _parse(tmp_path / "universal" / "model.safetensors")
    theirs, _, source = _parse(tmp_path / "source" / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, entry in ours.items():
        assert entry["dtype"] == theirs[name]["dtype"] and entry["shape"] == theirs[name]["shape"]
        b, e = entry["data_offsets"]
        sb, se = theirs[name]["data_offsets"]
        assert data[b:e] == source[sb:se], name


def test_pipeline_names_are_the_pipeline_modules() -> None:
    plan = plan_export(FIXTURES / "pp2_z1_bf16")
    assert plan.layout == "pipeline"
    # Every parameter of every layer file, as <layer index>.<key>; layer 01 (a ReLU) holds none.
    expected = {}
    for layer in (0, 1, 2, 3):
        checkpoint = ckptkeys.read(FIXTURES / "pp2_z1_bf16" / "global_step2" / f"layer_{layer:02d}-model_states.pt")
        expected.update({f"{layer}.{key}": tensor.shape for key, tensor in checkpoint.data.items()})
    assert {t.name: t.shape for t in plan.tensors} == expected
    # ... from both stages' fp32 partitions.
    assert {os.path.basename(s.path) for t in plan.tensors for s in t.sources} == {
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt",
    }


def test_moe_has_every_expert_under_its_global_name() -> None:
    plan = plan_export(FIXTURES / "moe_z2_fp32_ep2")
    assert plan.layout == "zero-1/2 moe"
    names = [t.name for t in plan.tensors]
    for expert in (0, 1):
        checkpoint = ckptkeys.read(
            FIXTURES / "moe_z2_fp32_ep2" / "global_step3" / f"layer_0_expert_{expert}_mp_rank_00_model_states.pt"
        )
        assert set(checkpoint.data) <= set(names)
    dense = ckptkeys.read(FIXTURES / "moe_z2_fp32_ep2" / "global_step3" / "mp_rank_00_model_states.pt")
    assert set(dense.data["module"]) <= set(names)
    assert len(names) == len(set(names)) == len(dense.data["module"]) + 4


def test_tp_rank_exports_one_rank_as_it_is() -> None:
    for rank in (0, 1):
        plan = plan_export(FIXTURES / "tp2_z1_bf16", tp_rank=rank)
        assert all(f"mp_rank_{rank:02d}" in s.path for t in plan.tensors for s in t.sources)
    with pytest.raises(ExportError, match="no mp_rank 02"):
        plan_export(FIXTURES / "tp2_z1_bf16", tp_rank=2)


def test_tag_choice(tmp_path: pathlib.Path) -> None:
    assert plan_export(FIXTURES / "z2_bf16_ws2", tag="global_step3").tag == "global_step3"
    assert plan_export(FIXTURES / "z2_bf16_ws2" / "global_step3").tag == "global_step3"
    with pytest.raises(ExportError, match="no tag folder 'global_step9'"):
        plan_export(FIXTURES / "z2_bf16_ws2", tag="global_step9")
    folder = _copy("z2_bf16_ws2", tmp_path)
    (folder / "latest").unlink()
    with pytest.raises(ExportError, match="has no 'latest' file to name the tag") as caught:
        plan_export(folder)
    assert caught.value.option == "tag"


def test_dry_run_writes_nothing_and_prints_the_plan(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", str(FIXTURES / "z3_bf16_ws2"), str(out), "--dry-run", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == json.loads(json.dumps(plan_export(FIXTURES / "z3_bf16_ws2").as_dict()))
    assert not out.exists()
    assert main(["export", str(FIXTURES / "z3_bf16_ws2"), str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "zero-3" in text and "fc1.weight  float32[12, 8]" in text
    assert not out.exists()
    assert main(["export", str(FIXTURES / "z3_bf16_ws2"), str(out), "--json"]) == 2


def test_export_does_not_import_numpy_for_copies(tmp_path: pathlib.Path) -> None:
    import subprocess

    code = (
        "import sys, ckptkeys; ckptkeys.export(sys.argv[1], sys.argv[2]); "
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules"
    )
    src = str(pathlib.Path(ckptkeys.__file__).parent.parent)
    env = dict(os.environ, PYTHONPATH=src)
    folder = str(FIXTURES / "z0_fp32_ws1")  # fp32 weights and buffer, fp32 output: every tensor a copy
    subprocess.run([sys.executable, "-c", code, folder, str(tmp_path)], check=True, env=env)


def test_short_partition_is_refused(tmp_path: pathlib.Path) -> None:
    """param_shapes asking for more elements than the partitions hold."""
    plan = plan_export(FIXTURES / "z1_bf16_ws1")
    assert math.prod(plan.tensors[-1].shape) > 0
    # The refusal itself is proven on a shard DeepSpeed wrote and torch shortened:
    # tests/test_export_deepspeed.py::test_short_partition_names_the_file.


FULL_DISK = """
import resource, signal, sys
from ckptkeys._cli._main import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
sys.exit(main(["export", sys.argv[1], sys.argv[2], "-q", *sys.argv[3:]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
@pytest.mark.parametrize("cast", [False, True])
def test_a_full_disk_names_the_output_and_leaves_no_file(cast: bool, tmp_path: pathlib.Path) -> None:
    """The file size limit makes every write past 1000 bytes fail, as a full disk does."""
    import subprocess

    if cast and importlib.util.find_spec("numpy") is None:
        pytest.skip("casts need numpy")
    out = tmp_path / "out"
    src = str(pathlib.Path(ckptkeys.__file__).parent.parent)
    extra = ["--dtype", "fp16"] if cast else []
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(FIXTURES / "z0_fp32_ws1"), str(out), *extra],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 74, done.stderr  # the output folder cannot be written
    assert f"{out / 'model.safetensors'}: cannot be written: File too large" in done.stderr
    assert os.listdir(out) == []


@needs_numpy
def test_jobs_of_a_sharded_export_write_disjoint_files_and_one_index(tmp_path: pathlib.Path) -> None:
    """--shard K/N: every job its own files, together all of them; the index from --index-only."""
    folder = str(FIXTURES / "z2_bf16_ws2")
    whole = export(folder, tmp_path / "whole", max_shard_size=300)
    n = len(whole.shards)
    assert n >= 3
    out = tmp_path / "jobs"
    seen: list[str] = []
    for k in (1, 2):
        assert main(["export", folder, str(out), "--max-shard-size", "300", "--shard", f"{k}/2", "-q"]) == 0
        now = sorted(os.listdir(out))
        new = [name for name in now if name not in seen]
        expected = [s.filename for i, s in enumerate(whole.shards, 1) if i % 2 == k % 2]
        assert new == expected
        seen = now
    assert "model.safetensors.index.json" not in seen
    assert main(["export", folder, str(out), "--max-shard-size", "300", "--index-only", "-q"]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "whole"))
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    # A job asked again refuses its own files, not the others'.
    assert main(["export", folder, str(out), "--max-shard-size", "300", "--shard", "1/2", "-q"]) == 2
    assert main(["export", folder, str(out), "--max-shard-size", "300", "--shard", "1/2", "--overwrite", "-q"]) == 0
    # The job removed the index (which named the files it replaced) before replacing them: until
    # the index job has run again, nothing is loadable, never a mix of old and new files.
    assert sorted(os.listdir(out)) == sorted(n for n in os.listdir(tmp_path / "whole") if not n.endswith(".json"))
    assert main(["export", folder, str(out), "--max-shard-size", "300", "--index-only", "--overwrite", "-q"]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "whole"))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_job_is_a_usage_error(text: str, tmp_path: pathlib.Path) -> None:
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(tmp_path), "--shard", text]) == 2


def test_index_only_of_a_single_file_export_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError, match="no index"):
        export(FIXTURES / "z2_bf16_ws2", tmp_path, index_only=True)


class _Terminal:
    """A stand-in for a terminal's stderr."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@needs_numpy
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_shows_on_a_terminal_only(
    quiet: bool, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(tmp_path), *(["-q"] if quiet else [])]) == 0
    total = plan_export(FIXTURES / "z2_bf16_ws2").total_size
    shown = f"exporting {total / 1e9:.2f}/{total / 1e9:.2f} GB"
    assert (shown in terminal.text) is not quiet
    assert "wrote 1 file(s)" in terminal.text


@needs_numpy
def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(FIXTURES / "z2_bf16_ws2"), str(tmp_path)]) == 0
    assert "exporting" not in capsys.readouterr().err


@needs_numpy
def test_progress_counts_every_output_byte_in_steps(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies report every step (64 MiB; 64 B here), casts every chunk: monotonic, ending at the total."""
    monkeypatch.setattr("ckptkeys._export._tensor_bytes._COPY_STEP", 64)
    seen: list[tuple[int, int]] = []
    plan = export(FIXTURES / "z2_bf16_ws2", tmp_path, progress=lambda done, total: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == plan.total_size
    assert {t for _, t in seen} == {plan.total_size}
    largest = max(t.nbytes for t in plan.tensors if t.dtype == t.source_dtype)
    assert len(seen) > len(plan.tensors) and largest > 64  # a tensor's copy reported in several steps
