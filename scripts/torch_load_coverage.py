"""Which lines and branches of torch's own load path the torch-backed tests reach.

Run (needs torch and ``coverage`` >= 7.10, neither a dependency of ckptkeys)::

    PYTHONPATH=src python scripts/torch_load_coverage.py [--keep DIR] [pytest args...]

Runs the differential and security tests that load files with torch (``tests/test_security_torch.py``,
``tests/test_torch_branches.py``, ``tests/test_reader_vs_torch.py`` by default, or the pytest
arguments given) under ``coverage run --branch``, subprocesses included (the payloads are loaded in
child interpreters), measuring only torch's files of the load path. Then prints, for each function of
:data:`FUNCTIONS`, the lines and branches reached, and every line and branch that was not: the
figures and the explanation of each gap are in docs/security.md's branch table. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ["tests/test_security_torch.py", "tests/test_torch_branches.py", "tests/test_reader_vs_torch.py"]
# The load path of torch 2.13, by file (relative to the torch package) and function ("outer.inner"
# for a closure). torch.load's other callees are listed in docs/security.md with their reason.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "serialization.py": (
        "load",
        "load._get_wo_message",
        "_default_to_weights_only",
        "_is_path",
        "_open_file_like",
        "_open_file.__init__",
        "_open_buffer_reader.__init__",
        "_check_seekable",
        "_is_zipfile",
        "_open_zipfile_reader.__init__",
        "_is_torchscript_zip",
        "_check_dill_version",
        "_load",
        "_load._get_offset",
        "_load.load_tensor",
        "_load.persistent_load",
        "_load.UnpicklerWrapper.find_class",
        "_load.UnpicklerWrapper.persistent_load",
        "_legacy_load",
        "_legacy_load._check_container_source",
        "_legacy_load.legacy_load",
        "_legacy_load.persistent_load",
        "_get_restore_location",
        "_maybe_decode_ascii",
        "_should_read_directly",
        "default_restore_location",
        "_get_layout",
    ),
    "_utils.py": (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_set_obj_state",
        "_get_obj_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_device_tensor_from_numpy",
        "_validate_loaded_sparse_tensors",
        "_import_dotted_name",
    ),
    "_tensor.py": ("_rebuild_from_type", "_rebuild_from_type_v2", "Tensor.__setstate__"),
    "jit/_serialization.py": ("load", "validate_map_location"),
}


def _spans(source: str) -> dict[str, tuple[int, int]]:
    """Each function's first and last line, by "outer.inner" name."""
    found: dict[str, tuple[int, int]] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found.setdefault(name, (child.lineno, child.end_lineno or child.lineno))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return found


def _inner(spans: dict[str, tuple[int, int]], name: str) -> set[int]:
    """Lines of the closures inside ``name``: they are counted as functions of their own."""
    first, last = spans[name]
    return {
        line
        for other, (start, end) in spans.items()
        if other.startswith(name + ".") and first <= start
        for line in range(start, end + 1)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=pathlib.Path, help="keep the coverage data in this folder")
    args, pytest_args = parser.parse_known_args()
    import coverage
    import torch

    base = pathlib.Path(torch.__file__).parent
    files = {name: base / name for name in FUNCTIONS}
    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="torch-load-coverage-"))
    work.mkdir(parents=True, exist_ok=True)
    rc = work / "coveragerc"
    rc.write_text(
        "[run]\nbranch = True\nparallel = True\npatch = subprocess\n"
        f"data_file = {work / '.coverage'}\ninclude =\n" + "".join(f"    {path}\n" for path in files.values()),
        encoding="utf-8",
    )
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT / "src"))
    command = [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    status = subprocess.run([*command, *(pytest_args or TESTS)], cwd=ROOT, env=env, check=False).returncode
    subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rc}"], cwd=ROOT, env=env, check=True)
    cov = coverage.Coverage(config_file=str(rc), data_file=str(work / ".coverage"))
    cov.load()
    print(f"\ntorch {torch.__version__}: the load path under {' '.join(pytest_args or TESTS)} (pytest exit {status})")
    totals = [0, 0, 0, 0]
    for relative, path in files.items():
        analysis = cov._analyze(str(path))  # lines, arcs and what was reached (coverage's own analysis)
        spans = _spans(path.read_text(encoding="utf-8"))
        executed = analysis.executed_branch_arcs()
        missing = analysis.missing_branch_arcs()
        for name in FUNCTIONS[relative]:
            if name not in spans:
                print(f"{relative}:{name}: not in this torch")
                continue
            first, last = spans[name]
            lines = set(range(first, last + 1)) - _inner(spans, name)
            statements = sorted(analysis.statements & lines)
            missed = sorted((analysis.statements - analysis.executed) & lines)
            taken = [(a, b) for a in sorted(executed) if a in lines for b in executed[a]]
            untaken = [(a, b) for a in sorted(missing) if a in lines for b in missing[a]]
            branches = taken + untaken
            totals[0] += len(statements) - len(missed)
            totals[1] += len(statements)
            totals[2] += len(taken)
            totals[3] += len(branches)
            print(
                f"{relative}:{first} {name}: lines {len(statements) - len(missed)}/{len(statements)}, "
                f"branches {len(taken)}/{len(branches)}"
            )
            if missed:
                print(f"    lines not run: {_ranges(missed)}")
            if untaken:
                print("    branches not taken: " + ", ".join(f"{a}->{b if b > 0 else 'exit'}" for a, b in untaken))
    print(f"\ntotal: lines {totals[0]}/{totals[1]}, branches {totals[2]}/{totals[3]}")


def _ranges(lines: list[int]) -> str:
    parts: list[str] = []
    start = prev = lines[0]
    for line in [*lines[1:], None]:
        if line is not None and line == prev + 1:
            prev = line
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if line is not None:
            start = prev = line
    return ", ".join(parts)


if __name__ == "__main__":
    main()
