"""``ckptkeys lint``: its options, the run over the files, and the output formats (ruff's names).

The findings come from :func:`ckptkeys.lint.lint_source` and the rewrites from
:func:`ckptkeys.lint.fix_source`; this module reads the files and the configuration
(``[tool.ckptkeys.lint]``, through ``_config``), and writes the findings as ruff writes its own:
concise, full, json, github annotations, SARIF 2.1.0, statistics, and the summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Final, TextIO

from .._read._errors import ReadError
from ._status import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, fail, fail_read, say

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .. import lint

__all__ = [
    "OUTPUT_FORMATS",
    "add_lint",
    "github_annotation",
    "run_lint",
    "sarif_document",
    "statistics_document",
    "summary",
]

# lint's --output-format choices (ruff's names).
OUTPUT_FORMATS = ("concise", "full", "json", "github", "sarif")


def add_lint(commands: argparse._SubParsersAction[Any]) -> None:
    """The ``lint`` command and its options."""
    lint = commands.add_parser(
        "lint",
        help="find loose checkpoint-key strings in Python code (docs/lint.md)",
        description="Find loose checkpoint-key strings in Python code and rewrite them to the key registry.",
    )
    lint.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=".py files (linted whatever exclude says, as ruff) or folders (walked); - alone: standard input; "
        "none: . (standard input with --stdin-filename), as ruff",
    )
    lint.add_argument(
        "--stdin-filename", metavar="PATH", help="with -: the file's name in the findings and for per-file-ignores"
    )
    lint.add_argument(
        "--select",
        metavar="CODES",
        action="append",
        help="only these codes or prefixes, comma-separated, repeatable (CK1,CK301); replaces the base set",
    )
    lint.add_argument(
        "--extend-select", metavar="CODES", action="append", help="these codes or prefixes too, comma-separated"
    )
    lint.add_argument("--ignore", metavar="CODES", action="append", help="not these codes or prefixes, comma-separated")
    lint.add_argument(
        "--exclude",
        metavar="PATTERNS",
        action="append",
        help="skip the files and folders the walk finds that match these globs, comma-separated "
        "(replaces exclude of the config, and ruff's default list)",
    )
    lint.add_argument(
        "--extend-exclude",
        metavar="PATTERNS",
        action="append",
        help="skip these globs too, besides exclude (ruff's default list where it is unset)",
    )
    lint.add_argument(
        "--respect-gitignore",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave out what .gitignore files ignore, inside a git work tree (the default)",
    )
    lint.add_argument("--fix", action="store_true", help="rewrite the unambiguous findings in place")
    lint.add_argument("--diff", action="store_true", help="print the rewrites as a diff; change no file")
    lint.add_argument("--json", action="store_true", help="one JSON document (--output-format json)")
    lint.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="concise",
        help="concise: path:line:col: CODE message; full: and the source line; json; github: annotations; sarif: 2.1.0",
    )
    lint.add_argument(
        "--force-exclude",
        action="store_true",
        help="apply exclude to the paths named too, and to --stdin-filename (as pre-commit names files)",
    )
    config = lint.add_mutually_exclusive_group()
    config.add_argument(
        "--config", metavar="PATH", help="read [tool.ckptkeys.lint] from this file, not the pyproject.toml found"
    )
    config.add_argument("--isolated", action="store_true", help="read no pyproject.toml")
    lint.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when findings remain (usage errors still 2)"
    )
    lint.add_argument(
        "--statistics", action="store_true", help="print the number of findings of each code instead of the findings"
    )
    loudness = lint.add_mutually_exclusive_group()  # as ruff's: the two exclude each other
    loudness.add_argument("-q", "--quiet", action="store_true", help="print the findings, but no summary line")
    loudness.add_argument(
        "-s", "--silent", action="store_true", help="print no findings and no summary; the exit status still says"
    )


def run_lint(args: argparse.Namespace) -> int:
    """``ckptkeys lint``: find (and with ``--fix`` rewrite) loose checkpoint-key strings; the exit code."""
    import difflib

    from .. import lint
    from .._read._files import open_regular
    from ._config import ConfigError, LintSettings, lint_settings, lint_settings_of

    args.json = args.json or args.output_format == "json"
    try:
        settings = lint_settings(args)
    except ConfigError as error:
        return fail("lint", EXIT_USAGE, str(error), json_too=args.json)
    # As ruff: each file under the closest pyproject.toml with [tool.ckptkeys] above it; a table
    # found there that cannot be used ends the run with 2, before any file is rewritten.
    settings_by_folder = lint_settings_of(args, settings)
    errors: list[ConfigError] = []

    def settings_of(path: str) -> LintSettings:
        try:
            return settings_by_folder(path)
        except ConfigError as error:
            errors.append(error)
            return settings

    if args.statistics and args.diff:  # as ruff's: the two answers exclude each other
        return fail("lint", EXIT_USAGE, "--statistics cannot be used with --diff", json_too=args.json)
    if args.statistics and args.output_format in ("github", "sarif"):  # as ruff's: no such form of statistics
        return fail(
            "lint", EXIT_USAGE, f"--statistics has no {args.output_format} form (concise, full or json)", json_too=False
        )
    if not args.paths:  # as ruff: `ckptkeys lint` is `ckptkeys lint .`, and standard input with --stdin-filename
        args.paths = ["-"] if args.stdin_filename is not None else ["."]
    stdin = "-" in args.paths
    if stdin and len(args.paths) > 1:
        return fail("lint", EXIT_USAGE, "- (standard input) goes alone, without other paths", json_too=args.json)
    if args.stdin_filename is not None and not stdin:
        why = "--stdin-filename goes with - (standard input) or no PATH, not with other paths"
        return fail("lint", EXIT_USAGE, why, json_too=args.json)
    missing = [p for p in args.paths if p != "-" and not os.path.exists(p)]
    if missing:  # a ReadError, as a missing PATH of every command
        return fail_read("lint", ReadError(missing[0], "does not exist"), json_too=args.json, path=missing[0])
    # As ruff: `lint --fix -` writes the fixed text to stdout, so the findings go to stderr.
    out = sys.stderr if stdin and args.fix and not args.diff else sys.stdout

    def reported(finding: lint.Finding) -> bool:
        found = settings_of(finding.path)
        return finding.code in found.enabled and not found.ignored(finding.code, finding.path)

    remaining: list[lint.Finding] = []
    fixed: list[lint.Finding] = []
    changed = 0
    sources: dict[str, str] = {}  # --output-format full: the text of each file with a finding
    # As ruff: exclude applies to what the walk finds, not to a file given by name.
    named = args.paths
    if args.force_exclude:  # as ruff's: exclude also leaves out the paths given, the --stdin-filename too
        named = [p for p in named if p == "-" or not settings_of(p).excluded_named(p)]
        if (
            stdin
            and args.stdin_filename is not None
            and settings_of(args.stdin_filename).excluded_named(args.stdin_filename)
        ):
            stdin = False
            if args.fix and not args.diff and sys.stdin is not None:
                _write_bytes(sys.stdin.buffer.read())  # as ruff: the text back as it came (the editor keeps it)
    files = (
        [args.stdin_filename or "-"]
        if stdin
        else lint.iter_python_files(
            [p for p in named if p != "-"],
            excluded=lambda p: settings_of(p).excluded(p),
            respect_gitignore=settings.respect_gitignore,
        )
    )
    files = list(files)  # the walk done first: every table below met before any file is rewritten
    # A file named and walked too (`lint b.py .`), or under two folders given (`lint a .`), once: its
    # findings were reported twice. ruff 0.17.6 lints a walked file once, a named one twice.
    unique: dict[str, str] = {}
    for path in files:
        unique.setdefault(path if path == "-" else os.path.abspath(path), path)
    files = list(unique.values())
    if errors:
        return fail("lint", EXIT_USAGE, str(errors[0]), json_too=args.json)
    texts: list[tuple[str, str, str]] = []  # (path, text, encoding) of each file read, in order
    linted_early: dict[int, list[lint.Finding]] = {}  # number in texts -> the CK001 of a file unreadable
    for path in files:
        try:
            if stdin:
                if sys.stdin is None:  # started with it closed (`<&-`): nothing to read, as a file that cannot be
                    raise ReadError(path, "cannot be read: standard input is closed")
                raw = sys.stdin.buffer.read()
                source, encoding = lint.decode_source(raw)
            else:
                with open_regular(path) as stream:  # a FIFO given as PATH is refused, not waited on
                    source, encoding = lint.decode_source(stream.readall())
        except ReadError as error:  # "cannot be read: Permission denied", "is a FIFO, not a regular file"
            unreadable = lint.Finding(path, 1, 1, "CK001", error.reason)
            texts.append((path, "", ""))
            linted_early[len(texts) - 1] = [unreadable] if reported(unreadable) else []
            continue
        except (OSError, SyntaxError, UnicodeDecodeError) as error:
            # One unreadable file is one finding; the other files are still linted.
            unreadable = lint.Finding(path, 1, 1, "CK001", f"cannot be read: {error}")
            texts.append((path, "", ""))
            linted_early[len(texts) - 1] = [unreadable] if reported(unreadable) else []
            if stdin and args.fix and not args.diff:
                _write_bytes(raw)  # the text as it came: nothing could be fixed
            continue
        texts.append((path, source, encoding))
    # The files of one project are linted as one: a helper of one module is evidence in another.
    # (the codes any file's table enables: `reported` then keeps each file's own)
    select = sorted({code for path, _, _ in texts for code in settings_of(path).enabled})
    linted = _lint_projects({path: text for n, (path, text, _) in enumerate(texts) if n not in linted_early}, select)
    for number, (path, source, encoding) in enumerate(texts):
        if number in linted_early:
            remaining += linted_early[number]
            continue
        new = source
        findings = [f for f in linted[path] if reported(f)]
        if args.output_format == "full" and findings:
            sources[path] = source
        if (args.fix or args.diff) and any(f.fixable for f in findings):
            new, applied = lint.fix_source(source, findings)
            if applied and not args.diff and not stdin and not errors:
                try:
                    _rewrite(path, new.encode(encoding))
                except OSError as error:  # read-only file or folder: said as one finding, the run goes on
                    unwritable = lint.Finding(path, 1, 1, "CK001", f"cannot be written: {error.strerror or error}")
                    remaining += [unwritable] if reported(unwritable) else []
                    new, applied = source, []
            if applied:
                changed += 1
                fixed += applied
                done = {id(f) for f in applied}
                findings = [f for f in findings if id(f) not in done]
                if args.diff:
                    sys.stdout.writelines(
                        difflib.unified_diff(
                            source.splitlines(keepends=True), new.splitlines(keepends=True), path, path
                        )
                    )
        if stdin and args.fix and not args.diff:
            # Nothing fixed: the bytes as they came (a decode and encode may differ: ISO-2022-JP's
            # redundant escapes, a codec's other spellings), else the fixed text in the file's encoding.
            _write_bytes(raw if new is source else new.encode(encoding))
        remaining += findings
    if errors:
        return fail("lint", EXIT_USAGE, str(errors[0]), json_too=args.json)
    # As ruff: by path, then position (the linter's order kept at one position), whatever order
    # the paths were given in and the walk met them.
    remaining.sort(key=lambda finding: (finding.path, finding.line, finding.col))
    if args.silent and not args.statistics:
        pass  # as ruff's --silent: nothing but --statistics, --diff and the fixed text of `-`
    elif args.statistics and args.json:
        print(json.dumps(statistics_document(remaining), indent=2), file=out)
    elif args.json and not args.diff:  # as ruff's: --diff's stdout is the diff alone, in every format
        document = {
            "schema_version": 1,
            "findings": [
                {
                    "path": f.path,
                    "line": f.line,
                    "col": f.col,
                    "end_line": f.end_line or f.line,
                    "end_col": f.end_col or f.col,
                    "code": f.code,
                    "message": f.message,
                    "value": f.value,
                    "candidates": list(f.candidates),
                    "fixable": f.fixable,
                    "evidence": f.evidence,
                }
                for f in remaining
            ],
            "fixed": len(fixed),
            "summary": {
                code: sum(1 for f in remaining if f.code == code) for code in sorted({f.code for f in remaining})
            },
        }
        print(json.dumps(document, indent=2), file=out)
    elif args.statistics:
        _statistics(remaining, out)
    elif args.output_format == "sarif" and not args.diff:
        print(json.dumps(sarif_document(remaining), indent=2), file=out)
    elif args.output_format == "github" and not args.diff:
        for finding in remaining:
            print(github_annotation(finding), file=out)
    elif not args.diff:
        for finding in remaining:
            print(finding, file=out)
            if args.output_format == "full":
                print(_source_excerpt(finding, sources.get(finding.path)), file=out)
    loud = not (args.quiet or args.silent)
    if loud and not args.json and not args.diff and args.output_format not in ("github", "sarif"):
        sys.stdout.flush()  # the findings first where stdout and stderr go to one terminal or file
        say(summary(len(remaining), sum(1 for f in remaining if f.fixable), len(fixed), changed))
    if args.exit_zero:
        return EXIT_OK
    if args.diff:
        return EXIT_PROBLEMS if fixed else EXIT_OK
    return EXIT_PROBLEMS if remaining else EXIT_OK


def _lint_projects(texts: dict[str, str], select: list[str]) -> dict[str, list[lint.Finding]]:
    """The findings of each file of a run (path as given -> findings), the files of each project
    linted as one by :func:`ckptkeys.lint.lint_project`. A file's project is the folder of the
    nearest ``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git`` above it (else the folder
    above its top package); the project's modules it imports that the run does not name (as when
    pre-commit names only the changed files) are read from there, never run."""
    import dataclasses

    from .. import lint
    from ..lint._project import project_root

    roots: dict[str, str] = {}  # folder -> its project's root
    projects: dict[str, dict[str, str]] = {}  # root -> absolute path -> text
    given: dict[str, list[str]] = {}  # absolute path -> the paths as given
    for path, text in texts.items():
        absolute = os.path.abspath(path)
        folder = os.path.dirname(absolute)
        if folder not in roots:
            roots[folder] = project_root(absolute)
        projects.setdefault(roots[folder], {})[absolute] = text
        given.setdefault(absolute, []).append(path)
    found: dict[str, list[lint.Finding]] = {path: [] for path in texts}
    for root, sources in projects.items():
        for finding in lint.lint_project(sources, select=select, root=root, read_imports=True):
            for path in given[finding.path]:
                found[path].append(dataclasses.replace(finding, path=path))
    return found


def github_annotation(finding: lint.Finding) -> str:
    """``--output-format github``: one GitHub Actions ``::error`` workflow command, as ruff writes it
    (title, file, line, col, endLine, endColumn; the message the concise line). The file is
    absolute, as ruff's: the runner takes a relative one from the repository's root, so a step
    with a ``working-directory`` would annotate another file (or none). With the
    property and message escapes the runner needs (``%``, CR, LF; and ``:`` ``,`` in properties),
    so that a path or message holding them cannot end the command early or forge another."""

    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return data(text).replace(":", "%3A").replace(",", "%2C")

    end_line = finding.end_line or finding.line
    end_col = finding.end_col or finding.col
    properties = (
        f"title={prop(f'ckptkeys ({finding.code})')},file={prop(os.path.abspath(finding.path))},"
        f"line={finding.line},col={finding.col},"
        f"endLine={end_line},endColumn={end_col}"
    )
    return f"::error {properties}::{data(str(finding))}"


def sarif_document(findings: list[lint.Finding]) -> dict[str, object]:
    """``--output-format sarif``: a SARIF 2.1.0 log of one run, as ruff's ``sarif`` format: the
    tool with a rule per code (its id and meaning), one ``error`` result per finding with its
    file URI and region. Columns are counted in characters, so the run says
    ``columnKind: unicodeCodePoints`` (SARIF's default counts UTF-16 code units)."""
    import pathlib

    from .. import __version__
    from ..lint import CODES

    rules = [{"id": code, "shortDescription": {"text": text}} for code, text in CODES.items()]
    index = {code: number for number, code in enumerate(CODES)}
    results = []
    for finding in findings:
        uri = pathlib.Path(os.path.abspath(finding.path)).as_uri()
        region = {
            "startLine": finding.line,
            "startColumn": finding.col,
            "endLine": finding.end_line or finding.line,
            "endColumn": finding.end_col or finding.col,
        }
        results.append(
            {
                "ruleId": finding.code,
                "ruleIndex": index[finding.code],
                "level": "error",
                "message": {"text": finding.message},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}, "region": region}}],
            }
        )
    driver = {"name": "ckptkeys", "version": __version__, "informationUri": "https://pypi.org/project/ckptkeys/"}
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {"tool": {"driver": {**driver, "rules": rules}}, "columnKind": "unicodeCodePoints", "results": results}
        ],
    }


def _source_excerpt(finding: lint.Finding, source: str | None) -> str:
    """``--output-format full``: the finding's first source line and a caret line under its span
    (to the end of that line where it goes on), then why it was reported and what to use."""
    from ..lint._files import physical_lines

    out: list[str] = []
    lines = physical_lines(source) if source is not None else []
    if 0 < finding.line <= len(lines):
        text = lines[finding.line - 1].rstrip("\r\n")
        number = str(finding.line)
        end = finding.end_col if finding.end_line == finding.line and finding.end_col > finding.col else len(text) + 1
        shown = [_shown(char) for char in text]
        before = sum(width for _, width in shown[: finding.col - 1])
        under = sum(width for _, width in shown[finding.col - 1 : end - 1])
        out += [
            f"{' ' * len(number)} |",
            f"{number} | {''.join(part for part, _ in shown)}",
            f"{' ' * len(number)} | {' ' * before}{'^' * max(1, under)}",
        ]
    if finding.evidence:
        out.append(f"  = why: {finding.evidence}")
    out.append("")
    return "\n".join(out)


# Bidirectional overrides and isolates: shown as U+FFFD, as ruff shows them, so that a line cannot
# reorder what the terminal displays (CVE-2021-42574, "Trojan Source").
_BIDI: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(char: str) -> tuple[str, int]:
    """One source character as ``--output-format full`` shows it, and its width in terminal
    columns, as ruff 0.17.6 shows it (measured): a tab as 4 spaces; a control character as its
    Control Picture (ESC as U+241B), never raw; a bidi control as U+FFFD; East Asian wide and
    fullwidth characters 2 columns, combining marks and format characters (U+200B) none."""
    import unicodedata

    if char == "\t":
        return "    ", 4
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code), 1
    if code == 0x7F:
        return "\u2421", 1
    if char in _BIDI:
        return "\ufffd", 1
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return char, 0
    return char, 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def summary(remaining: int, fixable: int, fixed: int = 0, files: int = 0) -> str:
    """The line ``lint`` ends with on stderr, ruff's summary in ckptkeys' words: ``Found 3 problems
    (2 fixable with --fix).``; after ``--fix``, ``Found 3 problems (2 fixed in 1 file, 1 remaining).``;
    ``All checks passed!`` where nothing was found."""

    def plural(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    if fixed:
        where = plural(files, "file")
        return f"Found {plural(fixed + remaining, 'problem')} ({fixed} fixed in {where}, {remaining} remaining)."
    if not remaining:
        return "All checks passed!"
    return f"Found {plural(remaining, 'problem')}" + (f" ({fixable} fixable with --fix)." if fixable else ".")


def statistics_document(findings: list[lint.Finding]) -> list[dict[str, object]]:
    """``--statistics --output-format json``: ruff's JSON statistics, one object per code in the
    order of the text form: ``code``, ``name`` (here the code's meaning: ckptkeys' codes have no
    short names), ``count``, ``fixable`` (any of them), ``fixable_count``."""
    from ..lint import CODES

    counts: dict[str, list[lint.Finding]] = {}
    for finding in findings:
        counts.setdefault(finding.code, []).append(finding)
    rows = sorted(counts.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        {
            "code": code,
            "name": CODES[code],
            "count": len(group),
            "fixable": any(f.fixable for f in group),
            "fixable_count": sum(1 for f in group if f.fixable),
        }
        for code, group in rows
    ]


def _statistics(findings: list[lint.Finding], out: TextIO) -> None:
    """``--statistics``: one line per code, ``count<TAB>code<TAB>[*] what``, most frequent first (as
    ruff, which mimics flake8); ``[*]`` marks a code whose findings here are fixable, ``[ ]`` the
    others, and neither is printed where nothing is fixable."""
    from ..lint import CODES

    counts: dict[str, list[lint.Finding]] = {}
    for finding in findings:
        counts.setdefault(finding.code, []).append(finding)
    if not counts:
        return
    rows = sorted(counts.items(), key=lambda item: (-len(item[1]), item[0]))
    any_fixable = any(f.fixable for group in counts.values() for f in group)
    width = len(str(max(len(group) for group in counts.values())))
    for code, group in rows:
        mark = ("[*] " if any(f.fixable for f in group) else "[ ] ") if any_fixable else ""
        print(f"{len(group):>{width}}\t{code}\t{mark}{CODES[code]}", file=out)


def _write_bytes(data: bytes) -> None:
    """Write ``data`` to standard output as bytes (``lint --fix -``: the text in its own encoding).
    Standard output closed (``>&-``; main's stand-in has no ``buffer``) fails as a write to a
    closed descriptor does, for main to say so (74)."""
    import errno

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        raise OSError(errno.EBADF, "it is closed")
    sys.stdout.flush()
    buffer.write(data)


def _rewrite(path: str, data: bytes) -> None:
    """Write ``data`` over the source file ``path`` whole or not at all: into a new file beside it,
    renamed over it, so that Ctrl-C or SIGTERM during ``lint --fix`` never leaves a source file
    truncated. Only a regular file of one link that this user owns is replaced so (its permission
    bits kept); a symlink, a hard-linked file, another user's file, or one in a folder this user
    cannot create files in is rewritten in place, as before, so that it stays what it is.
    """
    import stat

    from .._read._files import create_new, discard_temp, temp_published

    info = os.lstat(path)
    owner = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    temp = None
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == owner:
        try:
            temp, stream = create_new(path)
        except OSError:
            temp = None
    if temp is None:
        with open(path, "wb") as plain:
            plain.write(data)
        return
    try:
        stream.write(data)
        stream.flush()
        os.chmod(temp, stat.S_IMODE(info.st_mode))
        if sys.platform == "win32":  # an open file cannot be renamed there
            temp_published(temp)
        os.replace(temp, path)
        temp_published(temp)
    except BaseException:
        discard_temp(temp)
        raise
