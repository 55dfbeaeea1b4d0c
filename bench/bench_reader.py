"""Benchmark: ``ckptkeys.read`` of a ~1 GB ZeRO-2 checkpoint, against ``torch.load``.

Run: ``python bench/bench_reader.py``. The script first makes (once, cached under
``bench/_work/``) one tag of a ZeRO-2 bf16 AdamW run of a ~75M-parameter model: with DeepSpeed
when it is installed (one training step on the CPU accelerator, then ``save_checkpoint``),
otherwise a synthetic file pair of the same names, dict shapes and tensor sizes written with
torch alone. Without torch there is nothing to compare with: the script says so and exits 0.

Every figure comes from this one run, each measurement the *first* call in a fresh interpreter
(warm bytecode and page caches, the way a user's second command meets it; one untimed warm-up
run per figure), median of ``--runs``; the clock covers the call only, never the interpreter's
start-up, ``import ckptkeys`` or ``import torch``. torch is timed twice: as a user's command meets
it (``torch.load`` imports the DeepSpeed classes the pickle names inside the call: the issue's
measure, "torch's import not counted"), and with every named module imported before the clock
(the load alone):

* ``ckptkeys.read(path)`` of each file,
* ``torch.load(path, weights_only=False)`` and ``torch.load(path, mmap=True, weights_only=False)``,
* peak memory: the growth of the child's max RSS across the call and the child's absolute max
  RSS; for ckptkeys also on the small ZeRO-2 fixture, to show it does not grow with tensor bytes.

Targets (from the issue): torch full / ckptkeys >= 500x, torch mmap / ckptkeys >= 100x, and
ckptkeys' peak memory under 50 MB. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import ckptkeys  # noqa: E402

SMALL = ROOT / "tests/data/fixtures/z2_bf16_ws2/global_step3"
TAG = "global_step1"
MADE = "made.json"  # written last: its presence marks a complete cached checkpoint

# The model: an embedding and LAYERS MLP blocks (Linear HIDDEN->FFN, GELU, Linear FFN->HIDDEN),
# 32000*1024 + 5*(2*1024*4096 + 4096 + 1024) = 74.7M parameters. On disk: bf16 weights, 2 B per
# parameter, in mp_rank_00_model_states.pt (149 MB); fp32 master weights + Adam's two fp32
# moments, 12 B per parameter, in the one optimizer shard (896 MB): about 1.05 GB in all.
VOCAB, HIDDEN, FFN, LAYERS = 32000, 1024, 4096, 5
BYTES_PER_PARAMETER = 2 + 12
DS_CONFIG: dict[str, object] = {
    "train_micro_batch_size_per_gpu": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    "zero_optimization": {"stage": 2},
    "bf16": {"enabled": True},
}

READ_CHILD = """
import json, resource, sys, time
import ckptkeys
read = ckptkeys.read  # imports the reader modules: import cost, not read cost
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
checkpoint = read(sys.argv[1])
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tensor_bytes = sum(s.nbytes for s in checkpoint.storages.values())
print(json.dumps([elapsed, after - before, after, len(checkpoint.storages), tensor_bytes]))
"""

TORCH_CHILD = """
import importlib, json, resource, sys, time
import torch
for module in filter(None, sys.argv[3].split(",")):  # what unpickling would import, DeepSpeed included
    importlib.import_module(module)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
state = torch.load(sys.argv[1], mmap=sys.argv[2] == "mmap", weights_only=False)
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps([elapsed, after - before, after]))
"""


@dataclass
class Figure:
    """Median seconds and the largest memory figures (KiB) over the runs of one measurement."""

    seconds: float
    growth_kib: int
    max_rss_kib: int
    extra: list[int]


def parameter_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the model's parameters, as ``nn.Sequential`` names them."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("0.weight", (VOCAB, HIDDEN))]
    for layer in range(LAYERS):
        up, down = 1 + 3 * layer, 3 + 3 * layer
        shapes += [(f"{up}.weight", (FFN, HIDDEN)), (f"{up}.bias", (FFN,))]
        shapes += [(f"{down}.weight", (HIDDEN, FFN)), (f"{down}.bias", (HIDDEN,))]
    return shapes


def parameter_count() -> int:
    count = 0
    for _, shape in parameter_shapes():
        numel = 1
        for size in shape:
            numel *= size
        count += numel
    return count


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with bytecode caches, as installed packages have
    return env


# -- making the checkpoint (in a child process; torch and DeepSpeed are imported only there) ---


def generate_deepspeed(save_dir: pathlib.Path) -> str:
    """Train one ZeRO-2 bf16 AdamW step on the CPU accelerator and save tag ``TAG``."""
    import deepspeed
    import torch

    torch.manual_seed(0)
    layers = [torch.nn.Embedding(VOCAB, HIDDEN)]
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(HIDDEN, FFN), torch.nn.GELU(), torch.nn.Linear(FFN, HIDDEN)]
    model = torch.nn.Sequential(*layers)
    deepspeed.init_distributed(dist_backend="gloo")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=DS_CONFIG)
    loss = engine(torch.randint(0, VOCAB, (1, 16))).float().pow(2).mean()
    engine.backward(loss)
    engine.step()
    engine.save_checkpoint(str(save_dir), tag=TAG)
    return (
        f"DeepSpeed {deepspeed.__version__} (torch {torch.__version__}): one ZeRO-2 bf16 AdamW step on the CPU "
        "accelerator, gloo, 1 rank, engine.save_checkpoint"
    )


def generate_synthetic(save_dir: pathlib.Path) -> str:
    """DeepSpeed's two files for the same model and run, written with torch alone.

    Same names, same keys in the same order, tensors of the same dtypes and sizes; DeepSpeed's
    own classes (LossScaler, ZeroStageEnum, fragment_address) are replaced by plain values.
    """
    import collections

    import torch

    shapes = parameter_shapes()
    numel = parameter_count()
    # As ZeRO-2 saves them: every bf16 weight a view into one flat buffer, so one storage record.
    flat = torch.zeros(numel, dtype=torch.bfloat16)
    module: collections.OrderedDict[str, object] = collections.OrderedDict()
    slices: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
    start = 0
    for name, shape in shapes:
        size = int(torch.Size(shape).numel())
        module[name] = flat[start : start + size].view(shape)
        slices[name] = (size, start)
        start += size
    version_ = "synthetic"
    model_states = {
        "module": module,
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [collections.OrderedDict((name, torch.Size(shape)) for name, shape in shapes)],
        "frozen_param_shapes": collections.OrderedDict(),
        "shared_params": {},
        "frozen_param_fragments": collections.OrderedDict(),
        "lr_scheduler": None,
        "data_sampler": None,
        "random_ltd": None,
        "skipped_steps": 0,
        "global_steps": 1,
        "global_samples": 1,
        "dp_world_size": 1,
        "mp_world_size": 1,
        "checkpoint_parallel_dimensions": {"pp_degree": 1, "tp_degree": 1},
        "ds_config": DS_CONFIG,
        "ds_version": version_,
    }
    group = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": True,
        "params": [0],
    }
    optimizer = {
        "loss_scaler": {"cur_scale": 1.0, "dynamic": False},
        "dynamic_loss_scale": False,
        "overflow": False,
        "clip_grad": 1.0,
        "base_optimizer_state": {
            "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(numel), "exp_avg_sq": torch.zeros(numel)}},
            "param_groups": [group],
        },
        "single_partition_of_fp32_groups": [torch.zeros(numel)],
        "zero_stage": 2,
        "group_paddings": [0],
        "param_alignment_paddings": [[0] * len(shapes)],
        "partition_count": [1],
        "ds_version": version_,
        "param_slice_mappings": [slices],
    }
    tag = save_dir / TAG
    tag.mkdir(parents=True, exist_ok=True)
    torch.save(model_states, tag / "mp_rank_00_model_states.pt")
    optim = {"optimizer_state_dict": optimizer, "ds_config": DS_CONFIG, "ds_version": version_}
    torch.save(optim, tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (save_dir / "latest").write_text(TAG)
    return f"synthetic, written with torch {torch.__version__} alone: DeepSpeed's file names, dict shapes, tensor sizes"


GENERATE_CHILD = """
import json, pathlib, sys, time
start = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import bench_reader
save_dir = pathlib.Path(sys.argv[3])
how = getattr(bench_reader, sys.argv[2])(save_dir)
made = {"how": how, "parameters": bench_reader.parameter_count(), "seconds": time.perf_counter() - start}
(save_dir / bench_reader.MADE).write_text(json.dumps(made))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def checkpoint_dir(work_dir: pathlib.Path, source: str, regenerate: bool) -> tuple[pathlib.Path, dict[str, object]]:
    """The folder of the cached checkpoint made by ``source``, made now if missing or asked."""
    save_dir = work_dir / source
    if regenerate or not (save_dir / MADE).exists():
        shutil.rmtree(save_dir, ignore_errors=True)
        save_dir.mkdir(parents=True)
        needed = parameter_count() * BYTES_PER_PARAMETER
        free = shutil.disk_usage(save_dir).free
        if free < 2 * needed:
            sys.exit(f"{free / 1e9:.1f} GB free under {save_dir}, the checkpoint needs {needed / 1e9:.1f} GB")
        env = child_env()
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        func = "generate_deepspeed" if source == "deepspeed" else "generate_synthetic"
        print(f"making the checkpoint in {save_dir} ({func}) ...", flush=True)
        command = [sys.executable, "-c", GENERATE_CHILD, str(ROOT / "bench"), func, str(save_dir)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"making the checkpoint failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    made: dict[str, object] = json.loads((save_dir / MADE).read_text())
    return save_dir, made


# -- measuring -------------------------------------------------------------------------------


def measure(child: str, args: list[str], runs: int) -> Figure:
    """Run ``child`` in fresh interpreters: one warm-up, then ``runs`` timed runs."""
    samples = []
    for _ in range(runs + 1):
        done = subprocess.run([sys.executable, "-c", child, *args], env=child_env(), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{args[0]}: the child failed:\n{done.stderr[-3000:]}")
        samples.append(json.loads(done.stdout.splitlines()[-1]))
    timed = samples[1:]
    return Figure(
        seconds=statistics.median(s[0] for s in timed),
        growth_kib=max(s[1] for s in timed),
        max_rss_kib=max(s[2] for s in timed),
        extra=timed[-1][3:],
    )


def named_modules(path: pathlib.Path) -> str:
    """The modules the pickle names: the torch child imports them before its clock starts."""
    modules = {ref.module for ref in ckptkeys.read(path).globals}
    return ",".join(sorted(m for m in modules if importlib.util.find_spec(m.split(".")[0]) is not None))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms"


def mb(kib: int) -> str:
    return f"{kib / 1024:7.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per figure (median)")
    parser.add_argument("--regenerate", action="store_true", help="make the checkpoint again")
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / "bench/_work/reader", help="cache folder")
    parser.add_argument("--synthetic", action="store_true", help="the torch-only checkpoint even with DeepSpeed")
    args = parser.parse_args()

    if importlib.util.find_spec("torch") is None:
        print("torch is not installed (nor DeepSpeed): no checkpoint to make and nothing to compare with; skipped.")
        return
    source = "deepspeed" if importlib.util.find_spec("deepspeed") and not args.synthetic else "synthetic"
    print(f"Python {sys.version.split()[0]}, ckptkeys {ckptkeys.__version__}, torch {version('torch')}")

    start = time.perf_counter()
    save_dir, made = checkpoint_dir(args.work_dir.resolve(), source, args.regenerate)
    took = time.perf_counter() - start
    files = sorted((save_dir / TAG).glob("*.pt"), key=lambda p: p.stat().st_size)
    total = sum(p.stat().st_size for p in files)
    print(f"\ncheckpoint {save_dir / TAG}")
    print(f"  made by: {made['how']}")
    print(f"  {made['parameters']:,} parameters; generation took {made['seconds']:.0f} s", end="")
    print(f" (this run: {took:.0f} s)" if took > 1 else " (cached; --regenerate to make it again)")
    for path in files:
        print(f"  {path.name:<50} {path.stat().st_size / 1e6:9.1f} MB")
    print(f"  {'total':<50} {total / 1e6:9.1f} MB")

    rows, preloaded = [], []
    for path in files:
        ours = measure(READ_CHILD, [str(path)], args.runs)
        # As a user's command meets it: torch imported, and torch.load imports what the pickle
        # names (DeepSpeed's classes) itself, inside the call.
        full = measure(TORCH_CHILD, [str(path), "full", ""], args.runs)
        mmap = measure(TORCH_CHILD, [str(path), "mmap", ""], args.runs)
        rows.append((path, ours, full, mmap))
        # The load alone: every module the pickle names imported before the clock starts.
        modules = named_modules(path)
        full_pre = measure(TORCH_CHILD, [str(path), "full", modules], args.runs)
        mmap_pre = measure(TORCH_CHILD, [str(path), "mmap", modules], args.runs)
        preloaded.append((path, ours, full_pre, mmap_pre))
    small = [(path, measure(READ_CHILD, [str(path)], args.runs)) for path in sorted(SMALL.glob("*.pt"))]

    for title, table in (
        ("torch imported; torch.load imports what the pickle names (DeepSpeed) inside the call", rows),
        ("every module the pickle names imported before the clock: the load alone", preloaded),
    ):
        print(f"\nfirst call in a fresh interpreter, median of {args.runs}: {title}")
        print(
            f"  {'file':<48} {'ckptkeys.read':>13} {'torch.load':>12} {'mmap=True':>12} {'full/ck':>8} {'mmap/ck':>8}"
        )
        for path, ours, full, mmap in table:
            print(
                f"  {path.name:<48} {ms(ours.seconds):>13} {ms(full.seconds):>12} {ms(mmap.seconds):>12}"
                f" {full.seconds / ours.seconds:7.1f}x {mmap.seconds / ours.seconds:7.1f}x"
            )
        ours_total = sum(r[1].seconds for r in table)
        full_total, mmap_total = sum(r[2].seconds for r in table), sum(r[3].seconds for r in table)
        print(
            f"  {'whole checkpoint':<48} {ms(ours_total):>13} {ms(full_total):>12} {ms(mmap_total):>12}"
            f" {full_total / ours_total:7.1f}x {mmap_total / ours_total:7.1f}x"
        )
    print("  targets (issue 3, the first table): torch.load / ckptkeys >= 500x, mmap=True / ckptkeys >= 100x")

    print("\nwhat ckptkeys.read saw (storage records, tensor bytes named by the pickle, never read)")
    for path, ours, _, _ in rows:
        print(f"  {path.name:<48} {ours.extra[0]:>6} storages {ours.extra[1] / 1e6:9.1f} MB of tensors")

    print("\npeak memory of the child: max RSS growth across the call / absolute max RSS (largest of the runs)")
    print(f"  {'file':<48} {'ckptkeys.read':>21} {'torch.load':>21} {'mmap=True':>21}")
    for path, ours, full, mmap in rows:
        cells = [f"{mb(f.growth_kib)} / {mb(f.max_rss_kib)}" for f in (ours, full, mmap)]
        print(f"  {path.name:<48} {cells[0]:>21} {cells[1]:>21} {cells[2]:>21}")
    print(f"  small checkpoint, {SMALL.relative_to(ROOT)}:")
    for path, ours in small:
        cell = f"{mb(ours.growth_kib)} / {mb(ours.max_rss_kib)}"
        print(f"  {path.name:<48} {cell:>21}  ({path.stat().st_size / 1e3:.1f} kB file)")
    print("  (a growth of 0 means the call never raised the high-water mark left by start-up and imports)")
    print("  target: ckptkeys.read under 50 MB, the same for a 1 GB file as for a 5 kB one")


if __name__ == "__main__":
    main()
