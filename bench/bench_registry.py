"""Benchmark: import cost of the registry and dict look-up with members, against the references.

Run: ``python bench/bench_registry.py``. Every figure comes from this one run, each import in a
fresh interpreter (with warm bytecode caches, the way a user's second command meets it):

* ``import ckptkeys`` and ``import ckptkeys.constants``,
* a plain module holding the same 96 constants as ``str`` (the floor),
* ``import deepspeed.checkpoint.constants`` when DeepSpeed is installed;

and a dict look-up (dict loaded from disk, so its keys are not the caller's objects) with a
member vs with a plain string. Targets (issue 2): under 10 ms and at least 200x faster than
DeepSpeed's import; look-up within 1.5x of a plain string.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import timeit

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import ckptkeys  # noqa: E402
import ckptkeys.constants  # noqa: E402

IMPORT_TIMER = (
    "import time, sys; t = time.perf_counter(); import {module}; "
    "print(time.perf_counter() - t); "
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'deepspeed')))"
)


def import_seconds(module: str, runs: int, path: pathlib.Path | None = None) -> tuple[float, bool]:
    """Median wall time of ``import module`` in fresh interpreters; whether it pulled in heavy modules."""
    env = dict(os.environ)
    extra = [str(ROOT / "src"), *([str(path)] if path else [])]
    env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")])
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with bytecode caches, as installed packages have
    samples = []
    heavy = False
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True, capture_output=True)  # warm .pyc
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_TIMER.format(module=module)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        samples.append(float(out[0]))
        heavy = heavy or out[1] != "[]"
    return statistics.median(samples), heavy


def plain_constants_module(folder: pathlib.Path) -> None:
    """A module with the same 96 names and values, as bare assignments."""
    lines = [f"{name} = {getattr(ckptkeys.constants, name)!r}" for name in ckptkeys.constants.__all__]
    (folder / "plain_constants.py").write_text("\n".join(lines) + "\n", encoding="utf-8")


class _StrSubclass(str):
    """The cheapest possible typed key: the floor for any str subclass."""


def lookup_ns(number: int) -> dict[str, float]:
    """ns per statement, dict loaded from disk (its keys are not the caller's objects)."""
    values = sorted({member.value for member in ckptkeys.iter_members()})
    loaded = json.loads(json.dumps({value: i for i, value in enumerate(values)}))
    globals_ = {
        "d": loaded,
        "key": ckptkeys.OptimizerKeys.ZERO_STAGE,
        "plain_key": "zero_stage",
        "subclass_key": _StrSubclass("zero_stage"),
        "OptimizerKeys": ckptkeys.OptimizerKeys,
    }
    statements = {
        "literal": "d['zero_stage']",
        "plain": "d[plain_key]",
        "subclass": "d[subclass_key]",
        "member": "d[key]",
        "attribute": "d[OptimizerKeys.ZERO_STAGE]",
    }
    return {
        name: min(timeit.repeat(statement, globals=globals_, number=number, repeat=7)) / number * 1e9
        for name, statement in statements.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per import figure")
    parser.add_argument("--deepspeed-runs", type=int, default=3, help="fresh interpreters for DeepSpeed's import")
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}, ckptkeys {ckptkeys.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        plain_constants_module(folder)
        plain, _ = import_seconds("plain_constants", args.runs, folder)
    registry, heavy_registry = import_seconds("ckptkeys", args.runs)
    first_use, _ = import_seconds("ckptkeys; ckptkeys.OptimizerKeys.ZERO_STAGE", args.runs)
    shim, heavy_shim = import_seconds("ckptkeys.constants", args.runs)
    print("\nimport time (median of fresh interpreters)")
    print(f"  plain str module (floor)     {plain * 1e3:8.2f} ms")
    print(f"  import ckptkeys              {registry * 1e3:8.2f} ms  ({registry / plain:.1f}x the floor)")
    print(f"  import ckptkeys.constants    {shim * 1e3:8.2f} ms  ({shim / plain:.1f}x the floor)")
    print(f"  import + first use of a group {first_use * 1e3:7.2f} ms  (builds every enum class)")
    print(f"  pulled in torch/numpy/deepspeed: {heavy_registry or heavy_shim}")
    if importlib.util.find_spec("deepspeed") is not None:
        deepspeed, _ = import_seconds("deepspeed.checkpoint.constants", args.deepspeed_runs)
        print(f"  deepspeed.checkpoint.constants {deepspeed * 1e3:6.0f} ms")
        print(f"  ckptkeys.constants is {deepspeed / shim:.0f}x faster than DeepSpeed's (target >= 200x)")
    else:
        print("  deepspeed.checkpoint.constants: DeepSpeed not installed, not measured")

    ns = lookup_ns(2_000_000)
    print("\ndict look-up, dict loaded from disk (best of 7)")
    print(f"  d['zero_stage']   literal          {ns['literal']:6.1f} ns")
    print(f"  d[plain_key]      plain str name   {ns['plain']:6.1f} ns  (the reference)")
    print(f"  d[subclass_key]   bare str subclass {ns['subclass']:5.1f} ns  ({ns['subclass'] / ns['plain']:.2f}x)")
    ratio = ns["member"] / ns["plain"]
    print(f"  d[key]            member name      {ns['member']:6.1f} ns  ({ratio:.2f}x, target <= 1.5x)")
    print(f"  d[OptimizerKeys.ZERO_STAGE]        {ns['attribute']:6.1f} ns  (includes the class attribute read)")


if __name__ == "__main__":
    main()
