"""Benchmark: ``ckptkeys export`` against DeepSpeed's ``zero_to_fp32 --safe_serialization`` and the floor.

Run: ``python bench/bench_export.py [--runs 3] [--scale4]``. The script first makes (once, cached
under ``bench/_work/export/``) ZeRO-2 and ZeRO-3 fp32 AdamW checkpoints of a 66.3M-parameter
model with DeepSpeed (one training step on the CPU accelerator, one rank, then
``save_checkpoint``): about 1.06 GB each (fp32 module weights, master weights and two Adam
moments), 265 MB of fp32 weights to export. ``--scale4`` adds a ZeRO-2 checkpoint four times
larger (265M parameters) to show that ckptkeys' peak memory does not grow with the model.

Every figure is a whole command in a fresh process, as a user runs it (interpreter start-up and
imports included), median of ``--runs`` after one untimed warm-up (warm page cache), with the
process's peak RSS (``wait4``'s ``ru_maxrss``):

* ``ckptkeys export CKPT OUT`` (``--dtype fp32``; ``--no-fsync``; ``--dtype bf16``);
* ``python -m deepspeed.utils.zero_to_fp32 CKPT OUT --safe_serialization`` (DeepSpeed's command:
  torch, DeepSpeed and huggingface_hub imported; needs huggingface_hub and safetensors);
* the floor: ``dd`` reading the output's number of bytes from the checkpoint and writing them
  once, against ``ckptkeys export --no-fsync``; and ``dd conv=fsync`` against the default
  (ckptkeys fsyncs each file before renaming it).

The issue's targets: >= 5x faster than DeepSpeed, within 2x of the floor, peak RSS under 100 MB
and independent of model size, ``--dtype bf16`` within 2x of fp32. Printed, never asserted.
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

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import ckptkeys  # noqa: E402

TAG = "global_step1"
MADE = "made.json"  # written last: its presence marks a complete cached checkpoint
# An embedding and LAYERS MLP blocks: 32000*1024 + 4*(2*1024*4096 + 4096 + 1024) = 66.3M parameters.
VOCAB, HIDDEN, FFN, LAYERS = 32000, 1024, 4096, 4

GENERATE_CHILD = """
import json, pathlib, sys, time
import deepspeed, torch
save_dir, stage, scale = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
vocab, hidden, ffn, layers = (int(v) for v in sys.argv[4:8])
start = time.perf_counter()
torch.manual_seed(0)
modules = [torch.nn.Embedding(vocab * scale, hidden)]
for _ in range(layers * scale):
    modules += [torch.nn.Linear(hidden, ffn), torch.nn.GELU(), torch.nn.Linear(ffn, hidden)]
model = torch.nn.Sequential(*modules)
config = {
    "train_micro_batch_size_per_gpu": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    "zero_optimization": {"stage": stage},
}
deepspeed.init_distributed(dist_backend="gloo")
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
loss = engine(torch.randint(0, vocab, (1, 16))).float().pow(2).mean()
engine.backward(loss)
engine.step()
engine.save_checkpoint(str(save_dir), tag=sys.argv[8])
how = f"DeepSpeed {deepspeed.__version__} (torch {torch.__version__}), ZeRO-{stage} fp32 AdamW, 1 rank, CPU"
made = {"how": how, "seconds": time.perf_counter() - start}
(save_dir / sys.argv[9]).write_text(json.dumps(made))
"""


@dataclass
class Figure:
    seconds: float
    max_rss_kib: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def env() -> dict[str, str]:
    variables = dict(os.environ)
    variables["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), variables.get("PYTHONPATH", "")])
    variables.setdefault("DS_ACCELERATOR", "cpu")
    variables.pop("PYTHONDONTWRITEBYTECODE", None)
    return variables


def make(work: pathlib.Path, stage: int, scale: int) -> tuple[pathlib.Path, dict[str, object]]:
    save_dir = work / f"zero{stage}_x{scale}"
    if not (save_dir / MADE).exists():
        shutil.rmtree(save_dir, ignore_errors=True)
        save_dir.mkdir(parents=True)
        variables = env()
        variables.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0")
        variables.update(WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        print(f"making {save_dir} with DeepSpeed ...", flush=True)
        shape = [str(v) for v in (VOCAB, HIDDEN, FFN, LAYERS)]
        command = [sys.executable, "-c", GENERATE_CHILD, str(save_dir), str(stage), str(scale), *shape, TAG, MADE]
        done = subprocess.run(command, env=variables, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"making the checkpoint failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    made: dict[str, object] = json.loads((save_dir / MADE).read_text())
    return save_dir, made


def run(command: list[str], out: pathlib.Path) -> Figure:
    """One command in a fresh process: wall time and the process's peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        sys.exit(f"{' '.join(command)} failed:\n{error[-3000:]}")
    if process.stderr:
        process.stderr.close()
    return Figure(elapsed, usage.ru_maxrss)


def measure(command: list[str], out: pathlib.Path, runs: int) -> Figure:
    run(command, out)  # warm-up: page cache, bytecode
    figures = [run(command, out) for _ in range(runs)]
    return Figure(statistics.median(f.seconds for f in figures), max(f.max_rss_kib for f in figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / "bench/_work/export", help="cache folder")
    parser.add_argument("--scale4", action="store_true", help="also a ZeRO-2 checkpoint 4x larger (4.2 GB)")
    parser.add_argument("--no-deepspeed", action="store_true", help="skip DeepSpeed's zero_to_fp32 (slow)")
    args = parser.parse_args()
    missing = [m for m in ("torch", "deepspeed") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{', '.join(missing)} not installed: no checkpoint to make and nothing to compare with; skipped.")
        return
    compare = not args.no_deepspeed and all(importlib.util.find_spec(m) for m in ("safetensors", "huggingface_hub"))
    work = args.work_dir.resolve()
    cases = [(2, 1), (3, 1)] + ([(2, 4)] if args.scale4 else [])
    print(f"Python {sys.version.split()[0]}, ckptkeys {ckptkeys.__version__}; median of {args.runs}, fresh processes")
    results = []
    for stage, scale in cases:
        save_dir, made = make(work, stage, scale)
        size = sum(p.stat().st_size for p in (save_dir / TAG).glob("*.pt"))
        plan = ckptkeys.plan_export(save_dir)
        out = work / "out"
        ours = [sys.executable, "-m", "ckptkeys", "export", str(save_dir), str(out), "--overwrite", "-q"]
        fp32 = measure(ours, out, args.runs)
        nosync = measure([*ours, "--no-fsync"], out, args.runs)
        bf16 = measure([*ours, "--dtype", "bf16"], out, args.runs)
        source = max((save_dir / TAG).glob("*optim_states.pt"), key=lambda p: p.stat().st_size)
        dd = ["dd", f"if={source}", f"of={out / 'floor.bin'}", "bs=8M", f"count={plan.total_size}", "iflag=count_bytes"]
        floor = measure([*dd, "status=none"], out, args.runs)
        floor_sync = measure([*dd, "status=none", "conv=fsync"], out, args.runs)
        theirs = None
        if compare:
            command = [sys.executable, "-m", "deepspeed.utils.zero_to_fp32", str(save_dir), str(out)]
            theirs = measure([*command, "--safe_serialization"], out, args.runs)
        results.append((stage, made, size, plan, fp32, nosync, bf16, floor, floor_sync, theirs))

    for stage, made, size, plan, fp32, nosync, bf16, floor, floor_sync, theirs in results:
        parameters = sum(t.numel for t in plan.tensors if t.origin != "buffer")
        print(f"\nZeRO-{stage} fp32, {parameters:,} parameters: checkpoint {size / 1e9:.2f} GB, "
              f"export {plan.total_size / 1e6:.0f} MB in {len(plan.shards)} file(s)")  # fmt: skip
        print(f"  made by: {made['how']}")
        print(f"  {'command':<46} {'time':>9} {'peak RSS':>10}")
        rows = [
            ("ckptkeys export (fp32, fsync before rename)", fp32),
            ("ckptkeys export --no-fsync", nosync),
            ("ckptkeys export --dtype bf16", bf16),
            ("floor: dd, output bytes once", floor),
            ("floor: dd conv=fsync", floor_sync),
        ]
        if theirs is not None:
            rows.append(("zero_to_fp32 --safe_serialization", theirs))
        for label, figure in rows:
            print(f"  {label:<46} {figure.seconds:8.2f}s {figure.max_rss_kib / 1024:8.1f}MB")
        if theirs is not None:
            print(f"  DeepSpeed / ckptkeys: time {theirs.seconds / fp32.seconds:.1f}x, "
                  f"peak RSS {theirs.max_rss_kib / fp32.max_rss_kib:.1f}x  (target: >= 5x faster)")  # fmt: skip
        print(f"  ckptkeys / floor: {fp32.seconds / floor_sync.seconds:.2f}x (both fsync), "
              f"{nosync.seconds / floor.seconds:.2f}x (--no-fsync / dd)  (target: within 2x)")  # fmt: skip
        print(f"  bf16 / fp32: {bf16.seconds / fp32.seconds:.2f}x (target: within 2x); "
              f"peak RSS {fp32.max_rss_kib / 1024:.1f} MB (target: under 100 MB)")  # fmt: skip
    if not compare:
        print("\n(DeepSpeed's zero_to_fp32 skipped: --no-deepspeed, or safetensors/huggingface_hub missing)")


if __name__ == "__main__":
    main()
