"""Benchmark: ``ckptkeys lint``'s precision and recall on the labelled corpus, its findings on
DeepSpeed, and its speed against ``ast.parse``.

Run: ``python bench/bench_lint.py [FOLDER]`` (default: the installed ``deepspeed`` package);
``--no-corpus`` skips the corpus part, ``--corpus-only`` all the rest.
First the labelled corpus of tests/data/lint_corpus (bench/lint_corpus.py): precision and recall
per part and by kind, each project's files linted together (``lint_project``, as the command
runs): ``dev`` (the projects the rules were developed on), held-out (``heldout``, ``fresh``: kept
out, labelled before tuning, rules changed since after reading their misses), fresh (``fresh2``,
``fresh3``, ``fresh4``: labelled blind, never tuned on: issue 22's measure) and overall, against
the goal (precision >= 90%, recall >= 70%), and every remaining miss and wrong report. Then
the findings per code on the installed DeepSpeed (the named checkpoint files, and the whole
package). Then the speed: in one process, over the same files with their text already in memory: ``lint_source`` of
every file, ``lint_project`` of the whole package as one project (issue 22's project mode), and
``ast.parse`` of every file, the floor for any linter working on Python's own
syntax trees. Each figure is the median of ``--runs`` passes after one warm-up pass. Also the
whole command, ``python -m ckptkeys lint FOLDER``, as a user runs it (interpreter start-up and
file reads included). Target (issue 6): lint within 3x of ``ast.parse``. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib.util
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ckptkeys.lint import iter_python_files, lint_project, lint_source  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import lint_corpus  # noqa: E402

NAMED = ["runtime/engine.py", "checkpoint/*.py", "runtime/zero/stage_1_and_2.py", "runtime/zero/stage3.py"]
NAMED += ["runtime/bf16_optimizer.py"]


def timed(func: object, sources: list[tuple[str, str]], runs: int) -> float:
    samples = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        for path, text in sources:
            func(text, path)  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", help="folder to lint (default: the installed deepspeed package)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--corpus-only", action="store_true", help="only the corpus figures")
    parser.add_argument("--no-corpus", action="store_true", help="skip the corpus figures (only DeepSpeed and speed)")
    args = parser.parse_args()
    if not args.no_corpus:
        corpus()
    if args.corpus_only:
        return
    folder = args.folder
    if folder is None:
        spec = importlib.util.find_spec("deepspeed")
        if spec is None or not spec.submodule_search_locations:
            print("DeepSpeed is not installed and no FOLDER was given: nothing to lint; skipped.")
            return
        folder = next(iter(spec.submodule_search_locations))
    sources = [(p, pathlib.Path(p).read_text(encoding="utf-8")) for p in iter_python_files([folder])]
    lines = sum(text.count("\n") for _, text in sources)
    findings = sum(len(lint_source(text, path)) for path, text in sources)
    walked = sum(1 for path, text in sources if _walked(text, path))
    print(f"\nPython {sys.version.split()[0]}; {folder}")
    print(f"{len(sources)} files, {lines:,} lines, {findings} findings; {walked} files hold a candidate and are parsed")
    named = sorted({p for pattern in NAMED for p in pathlib.Path(folder).glob(pattern)})
    for title, files in (
        ("the named files", [(str(p), p.read_text(encoding="utf-8")) for p in named]),
        ("the package", sources),
    ):
        counts: collections.Counter[str] = collections.Counter()
        for path, text in files:
            counts.update(f.code for f in lint_source(text, path))
        summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
        print(f"  {title} ({len(files)} files): {sum(counts.values())} findings: {summary}")

    lint_s = timed(lint_source, sources, args.runs)
    parse_s = timed(ast.parse, sources, args.runs)
    # project mode: the package as one project (its imports resolved, helpers of other modules as evidence)
    texts, root = dict(sources), str(pathlib.Path(folder).resolve().parent)
    project_s = timed(lambda _text, _path: lint_project(texts, root=root), [("", "")], args.runs)
    print(f"\nin one process, text in memory, median of {args.runs}")
    print(f"  {'':<28} {'time':>9} {'files/s':>9} {'x ast.parse':>12}")
    for name, seconds in (
        ("ckptkeys lint_source", lint_s),
        ("ckptkeys lint_project", project_s),
        ("ast.parse (the floor)", parse_s),
    ):
        print(f"  {name:<28} {seconds * 1e3:7.0f}ms {len(sources) / seconds:9.0f} {seconds / parse_s:11.2f}x")
    candidates = [(path, text) for path, text in sources if _walked(text, path)]
    lint_c, parse_c = timed(lint_source, candidates, args.runs), timed(ast.parse, candidates, args.runs)
    print(f"  only the {len(candidates)} files that hold a candidate (no pre-filter advantage):")
    for name, seconds in (("ckptkeys lint_source", lint_c), ("ast.parse (the floor)", parse_c)):
        print(f"  {name:<28} {seconds * 1e3:7.0f}ms {len(candidates) / seconds:9.0f} {seconds / parse_c:11.2f}x")
    print("  target (issue 6): lint within 3x of ast.parse; (issue 22): lint_project too")

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples = []
    for _ in range(args.runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ckptkeys", "lint", folder], env=env, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    whole = statistics.median(samples[1:])
    print(f"\nthe whole command, python -m ckptkeys lint: {whole * 1e3:.0f} ms ({len(sources) / whole:.0f} files/s)")


def corpus() -> None:
    print("labelled corpus (tests/data/lint_corpus), each project's files linted together as ckptkeys lint runs them")
    print("goal precision >= 90%, recall >= 70% on code never tuned on")
    print(
        f"  {'part':<34} {'files':>5} {'labels':>6} {'right':>5} {'reported':>8} {'correct':>7}"
        f" {'precision':>9} {'recall':>7}"
    )
    labels = lint_corpus.labels()
    rows: list[tuple[str, tuple[str, ...] | None]] = [(part, (part,)) for part in lint_corpus.SPLITS]
    rows += [
        ("dev (rules developed on it)", ("dev",)),
        ("held-out (heldout, fresh)", tuple(p for p in lint_corpus.HELD_OUT if p not in lint_corpus.UNTUNED)),
        ("fresh (fresh2-4, never tuned on)", lint_corpus.UNTUNED),
        ("all", None),
    ]
    for title, parts in rows:
        score = lint_corpus.Score()
        misses: list[lint_corpus.Miss] = []
        wrong: list[lint_corpus.Miss] = []
        for part in parts or (None,):
            found = lint_corpus.score_projects(part, lint=lint_corpus.lint_whole)
            score.add(found[0])
            misses += found[1]
            wrong += found[2]
        entries = [e for e in labels.values() if parts is None or e["split"] in parts]
        count = sum(len(e["labels"]) for e in entries)  # type: ignore[misc, arg-type]
        print(
            f"  {title:<34} {len(entries):>5} {count:>6} {score.positives:>5} {score.reported:>8} {score.right:>7}"
            f" {score.precision:>8.1%} {score.recall:>7.1%}"
        )
        if parts is None:
            for miss in misses:
                print(f"    missed: {miss.path}:{miss.line} {miss.value!r}: {miss.note}")
            for report in wrong:
                print(f"    wrong:  {report.path}:{report.line} {report.value!r}: {report.note}")


def _walked(text: str, path: str) -> bool:
    from ckptkeys.lint._evidence import registry_index

    return registry_index().prefilter.search(text) is not None


if __name__ == "__main__":
    main()
