"""Extract the complete Python programs from the Markdown docs, for mypy to check.

The rule: a fenced ``python`` block whose fence line directly follows the line
``<!-- mypy -->`` is a complete program (it imports everything it uses) and is type-checked
by CI with ``mypy --strict`` for every target version. Other ``python`` blocks are fragments.

    python -m tests.doc_examples OUTDIR    # writes one module per example, prints their paths
"""

from __future__ import annotations

import builtins
import pathlib
import re
import symtable
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = "<!-- mypy -->"
_FENCE = re.compile(r"^(`{3,})python\s*$")


@dataclass(frozen=True)
class Example:
    """One marked block: where it is and its code."""

    path: pathlib.Path
    line: int  # 1-based line number of the opening fence
    code: str

    @property
    def module(self) -> str:
        """A module name unique to the example: ``writing_md_line45``."""
        stem = re.sub(r"\W", "_", self.path.name)
        return f"{stem}_line{self.line}"


class MarkerError(ValueError):
    """A marker not directly followed by a ``python`` block, or a block that is never closed."""


def examples_in(path: pathlib.Path) -> list[Example]:
    """Every marked block of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = python_blocks(path)
    fences = {line for line, _ in blocks}
    for index, line in enumerate(lines):
        if line.strip() == MARKER and index + 2 not in fences:
            raise MarkerError(f"{path}:{index + 1}: {MARKER} must directly precede a ```python block")
    return [Example(path, line, code) for line, code in blocks if line >= 2 and lines[line - 2].strip() == MARKER]


def is_complete(code: str) -> bool:
    """Whether ``code`` is a program: it parses and binds every global name it uses.

    The test suite checks that exactly the complete ``python`` blocks carry the marker. A star
    import binds names that cannot be known here: such a block counts as complete.
    """
    try:
        table = symtable.symtable(code, "<example>", "exec")
    except SyntaxError:
        return False
    bound = {symbol.get_name() for symbol in table.get_symbols() if symbol.is_assigned() or symbol.is_imported()}
    if re.search(r"^\s*from\s+\S+\s+import\s+\*", code, re.MULTILINE):
        return True
    used: set[str] = set()
    tables = [table]
    while tables:
        current = tables.pop()
        tables.extend(current.get_children())
        for symbol in current.get_symbols():
            if symbol.is_referenced() and (current is table or symbol.is_global()):
                used.add(symbol.get_name())
    return used <= bound | set(dir(builtins))


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every ``python`` block of a Markdown file, marked or not: (line of the fence, code)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening:
            end = next((e for e in range(index + 1, len(lines)) if lines[e].strip() == opening.group(1)), None)
            if end is None:
                raise MarkerError(f"{path}:{index + 1}: the ```python block is never closed")
            blocks.append((index + 1, "\n".join(lines[index + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


def markdown_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """The docs that may hold examples: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def all_examples(root: pathlib.Path = ROOT) -> list[Example]:
    return [example for path in markdown_files(root) for example in examples_in(path)]


def write(examples: list[Example], outdir: pathlib.Path) -> list[pathlib.Path]:
    """One module per example, named after its file and line, so mypy's messages lead back to it."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for example in examples:
        target = outdir / f"{example.module}.py"
        header = f"# {example.path.name}, the block at line {example.line}\n"
        target.write_text(header + example.code, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    examples = all_examples()
    if not examples:
        print(f"error: no {MARKER} example found", file=sys.stderr)
        return 1
    for path in write(examples, pathlib.Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
