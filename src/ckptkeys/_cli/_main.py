"""The ``ckptkeys`` command line."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO, cast

from .._keys import _registry, _render
from .._keys._strenum import KeyGroup
from .._read._errors import ReadError
from ._export import add_export, run_export
from ._signals import Interrupted
from ._status import EXIT_MEANINGS, EXIT_OK, EXIT_OUTPUT, EXIT_PROBLEMS, EXIT_USAGE, fail, fail_read

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from .. import lint

__all__ = ["main"]

# The small real DeepSpeed checkpoint shipped in the package, for `inspect --example`.
EXAMPLE = os.path.join(os.path.dirname(__file__), "_example", "z2_bf16_ws2")
# The commands, every one of which takes --json.
COMMANDS = ("keys", "inspect", "validate", "lint", "export")
# lint's --output-format choices (ruff's names).
OUTPUT_FORMATS = ("concise", "full", "json", "github", "sarif")
# Show a progress line on a terminal when a folder has at least this many files.
PROGRESS_MIN_FILES = 32


def version() -> str:
    """The installed distribution's version; ``ckptkeys.__version__`` where none is installed.

    Without an installed distribution (a source tree on ``sys.path``), ``importlib.metadata``
    has nothing to say, and the package's own version is the answer.
    """
    from importlib import metadata  # only for --version: it costs milliseconds to import

    try:
        return metadata.version("ckptkeys")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


class _VersionAction(argparse.Action):
    """``--version``: print ``ckptkeys X.Y.Z`` on stdout and exit 0; the version is looked up only then."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"ckptkeys {version()}\n")
        parser.exit()  # main flushes standard output: /dev/full is 74, as for every command


class _UsageError(Exception):
    """An argument error found by argparse: its message and the (sub)command's name."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse's own swallows an OSError (--help > /dev/full: nothing printed, status 0): let
        # main say that standard output cannot be written, as for every command.
        if message:
            (file if file is not None else sys.stderr).write(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ckptkeys", description="A typed vocabulary for DeepSpeed checkpoints.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    keys = commands.add_parser("keys", help="print the key registry", description="Print the key registry.")
    keys.add_argument(
        "group",
        nargs="?",
        metavar="GROUP|VALUE",
        help=(
            "one group, e.g. OptimizerKeys, or the members whose value is VALUE, e.g. ds_version (default: all groups)"
        ),
    )
    form = keys.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true", help="Markdown, as in docs/keys.md")
    form.add_argument("--json", action="store_true", help="one JSON document")
    for name, text in (
        ("inspect", "summarise a run, save folder, tag folder or file: layout, keys, globals, converters, problems"),
        ("validate", "report the problems of a checkpoint, grouped by severity"),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        # validate needs PATH; inspect takes PATH or --example (checked in _check_usage).
        command.add_argument(
            "path",
            nargs="?" if name == "inspect" else None,
            metavar="PATH",
            help="run folder, save folder, tag folder or checkpoint file",
        )
        command.add_argument("--json", action="store_true", help="one JSON document (docs/cli.md), errors included")
        quiet = "no progress line"
        if name == "validate":
            quiet = "no progress and no report (--json still prints its document)"
        command.add_argument("--quiet", "-q", action="store_true", help=quiet)
        saves = command.add_mutually_exclusive_group()
        saves.add_argument("--all", action="store_true", dest="all_saves", help="a run: report every save")
        saves.add_argument("--save", metavar="NAME", help="a run: report the save NAME (default: the newest)")
        _add_selection(command)
        if name == "inspect":
            command.add_argument("--depth", type=int, default=1, metavar="N", help="levels of the key trees (1)")
            command.add_argument(
                "--example", action="store_true", help="inspect the small DeepSpeed checkpoint shipped with ckptkeys"
            )
    lint = commands.add_parser(
        "lint",
        help="find loose checkpoint-key strings in Python code (docs/lint.md)",
        description="Find loose checkpoint-key strings in Python code and rewrite them to the key registry.",
    )
    lint.add_argument("paths", nargs="+", metavar="PATH", help=".py files or folders; - reads standard input")
    lint.add_argument(
        "--stdin-filename", metavar="PATH", help="with -: the file's name in the findings and for per-file-ignores"
    )
    lint.add_argument(
        "--select", metavar="CODES", action="append", help="only these codes or prefixes, comma-separated (CK1,CK301)"
    )
    lint.add_argument(
        "--extend-select", metavar="CODES", action="append", help="these codes or prefixes too, comma-separated"
    )
    lint.add_argument("--ignore", metavar="CODES", action="append", help="not these codes or prefixes, comma-separated")
    lint.add_argument(
        "--exclude",
        metavar="PATTERNS",
        action="append",
        help="skip files and folders matching these globs, comma-separated (replaces exclude of the config)",
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
        "--force-exclude", action="store_true", help="apply exclude to the files named too (as pre-commit names them)"
    )
    config = lint.add_mutually_exclusive_group()
    config.add_argument("--config", metavar="PATH", help="read [tool.ckptkeys.lint] from this pyproject.toml")
    config.add_argument("--isolated", action="store_true", help="read no pyproject.toml")
    lint.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when findings remain (usage errors still 2)"
    )
    lint.add_argument(
        "--statistics", action="store_true", help="print the number of findings of each code instead of the findings"
    )
    add_export(commands)
    return parser


def _add_selection(command: argparse.ArgumentParser) -> None:
    """inspect's and validate's --select, --ignore, --fail-on, --require and where their defaults come from."""
    from .._check._select import FAIL_ON

    command.add_argument(
        "--select",
        metavar="CODES",
        action="append",
        help="only these codes, prefixes (missing-) or groups (security), comma-separated",
    )
    command.add_argument(
        "--ignore", metavar="CODES", action="append", help="not these codes, prefixes or groups, comma-separated"
    )
    command.add_argument(
        "--fail-on", choices=FAIL_ON, help="exit 1 on a shown problem of this severity or worse (default: error)"
    )
    command.add_argument(
        "--require",
        metavar="CONVERTER[,CONVERTER]",
        action="append",
        help="zero_to_fp32, ds_to_universal: that converter failing on a tag is an error",
    )
    config = command.add_mutually_exclusive_group()
    config.add_argument("--config", metavar="PATH", help="read [tool.ckptkeys.validate] from this pyproject.toml")
    config.add_argument("--isolated", action="store_true", help="read no pyproject.toml")


def _lint(args: argparse.Namespace) -> int:
    import difflib

    from .. import lint
    from .._read._files import open_regular
    from ._config import ConfigError, lint_settings

    args.json = args.json or args.output_format == "json"
    try:
        settings = lint_settings(args)
    except ConfigError as error:
        return fail("lint", EXIT_USAGE, str(error), json_too=args.json)
    stdin = "-" in args.paths
    if stdin and len(args.paths) > 1:
        return fail("lint", EXIT_USAGE, "- (standard input) goes alone, without other paths", json_too=args.json)
    if args.stdin_filename is not None and not stdin:
        return fail("lint", EXIT_USAGE, "--stdin-filename goes with - (standard input)", json_too=args.json)
    missing = [p for p in args.paths if p != "-" and not os.path.exists(p)]
    if missing:  # a ReadError, as a missing PATH of every command
        return fail_read("lint", ReadError(missing[0], "does not exist"), json_too=args.json, path=missing[0])
    select = sorted(settings.enabled)
    # As ruff: `lint --fix -` writes the fixed text to stdout, so the findings go to stderr.
    out = sys.stderr if stdin and args.fix and not args.diff else sys.stdout

    def reported(finding: lint.Finding) -> bool:
        return finding.code in settings.enabled and not settings.ignored(finding.code, finding.path)

    remaining: list[lint.Finding] = []
    fixed: list[lint.Finding] = []
    changed = 0
    sources: dict[str, str] = {}  # --output-format full: the text of each file with a finding
    # As ruff: exclude applies to what the walk finds, not to a file given by name.
    named = args.paths
    if args.force_exclude:  # as ruff's: exclude also leaves out the paths given, the --stdin-filename too
        named = [p for p in named if p == "-" or not settings.excluded_named(p)]
        stdin = stdin and not (args.stdin_filename is not None and settings.excluded_named(args.stdin_filename))
    files = (
        [args.stdin_filename or "-"]
        if stdin
        else lint.iter_python_files([p for p in named if p != "-"], excluded=settings.excluded)
    )
    for path in files:
        try:
            if stdin:
                raw = sys.stdin.buffer.read()
                source, encoding = lint.decode_source(raw)
            else:
                with open_regular(path) as stream:  # a FIFO given as PATH is refused, not waited on
                    source, encoding = lint.decode_source(stream.readall())
        except ReadError as error:  # "cannot be read: Permission denied", "is a FIFO, not a regular file"
            unreadable = lint.Finding(path, 1, 1, "CK001", error.reason)
            remaining += [unreadable] if reported(unreadable) else []
            continue
        except (OSError, SyntaxError, UnicodeDecodeError) as error:
            # One unreadable file is one finding; the other files are still linted.
            unreadable = lint.Finding(path, 1, 1, "CK001", f"cannot be read: {error}")
            remaining += [unreadable] if reported(unreadable) else []
            if stdin and args.fix and not args.diff:
                sys.stdout.buffer.write(raw)  # the text as it came: nothing could be fixed
            continue
        new = source
        findings = [f for f in lint.lint_source(source, path, select=select) if reported(f)]
        if args.output_format == "full" and findings:
            sources[path] = source
        if (args.fix or args.diff) and any(f.fixable for f in findings):
            new, applied = lint.fix_source(source, findings)
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
                elif not stdin:
                    _rewrite(path, new.encode(encoding))
        if stdin and args.fix and not args.diff:
            sys.stdout.buffer.write(new.encode(encoding))
        remaining += findings
    if args.json:
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
    if not args.json and not args.diff and args.output_format not in ("github", "sarif"):
        sys.stdout.flush()  # the findings first where stdout and stderr go to one terminal or file
        print(summary(len(remaining), sum(1 for f in remaining if f.fixable), len(fixed), changed), file=sys.stderr)
    if args.exit_zero:
        return EXIT_OK
    if args.diff:
        return EXIT_PROBLEMS if fixed else EXIT_OK
    return EXIT_PROBLEMS if remaining else EXIT_OK


def github_annotation(finding: lint.Finding) -> str:
    """``--output-format github``: one GitHub Actions ``::error`` workflow command, as ruff writes it
    (title, file, line, col, endLine, endColumn; the message the concise line), with the
    property and message escapes the runner needs (``%``, CR, LF; and ``:`` ``,`` in properties),
    so that a path or message holding them cannot end the command early or forge another."""

    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return data(text).replace(":", "%3A").replace(",", "%2C")

    end_line = finding.end_line or finding.line
    end_col = finding.end_col or finding.col
    properties = (
        f"title={prop(f'ckptkeys ({finding.code})')},file={prop(finding.path)},line={finding.line},col={finding.col},"
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
        text = lines[finding.line - 1].rstrip("\r\n").expandtabs(1)
        number = str(finding.line)
        end = finding.end_col if finding.end_line == finding.line and finding.end_col > finding.col else len(text) + 1
        out += [
            f"{' ' * len(number)} |",
            f"{number} | {text}",
            f"{' ' * len(number)} | {' ' * (finding.col - 1)}{'^' * max(1, end - finding.col)}",
        ]
    if finding.evidence:
        out.append(f"  = why: {finding.evidence}")
    out.append("")
    return "\n".join(out)


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


def _groups(name: str | None) -> tuple[type[KeyGroup], ...] | None:
    """The groups ``ckptkeys keys NAME`` prints (all without NAME), or None if NAME names no group (any case)."""
    if name is None:
        return _registry.GROUPS
    for group in _registry.GROUPS:
        if group.__name__.lower() == name.lower():
            return (group,)
    return None


def _members(value: str) -> tuple[KeyGroup, ...]:
    """The members whose value is ``value`` (``ckptkeys.members_for``), else those whose value equals
    it ignoring case (no two values of the registry differ only in case): empty if none."""
    members = _registry.members_for(value)
    if members:
        return members
    folded = value.casefold()
    return tuple(member for member in _registry.iter_members() if member.value.casefold() == folded)


def _unknown(name: str) -> str:
    """The message for a NAME that is neither a group nor a key value."""
    import difflib  # only on this error path

    values = sorted({member.value for member in _registry.iter_members()})
    close = difflib.get_close_matches(name, values, n=3, cutoff=0.6)
    hint = f"; closest values: {', '.join(map(repr, close))}" if close else ""
    known = ", ".join(group.__name__ for group in _registry.GROUPS)
    return f"no group or key value {name!r}{hint}; the groups are: {known}"


def _keys(args: argparse.Namespace) -> int:
    groups = _groups(args.group)
    if groups is None:  # not a group: a key value
        members = _members(args.group)
        if not members:
            return fail("keys", EXIT_USAGE, _unknown(args.group), json_too=args.json)
        value = members[0].value
        if args.markdown:
            text = _render.render_members_markdown(value, members)
        elif args.json:
            text = _render.render_members_json(value, members)
        else:
            text = _render.render_members_text(value, members)
    else:
        # A group name wins over an equal key value (none exists today): the members are named.
        also = _registry.members_for(args.group) if args.group is not None else ()
        if also:
            named = ", ".join(f"{member.group.__name__}.{member.name}" for member in also)
            print(f"ckptkeys keys: {args.group!r} is also the value of {named}", file=sys.stderr)
        if args.markdown:
            text = _render.render_markdown(groups)
        elif args.json:
            text = _render.render_json(groups)
        else:
            text = _render.render_text(groups)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


class _Progress:
    """A one-line progress indicator on stderr, only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and total >= PROGRESS_MIN_FILES:
            sys.stderr.write(f"\rreading {done}/{total} files")
            sys.stderr.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _check(args: argparse.Namespace) -> int:
    from ._report import build_report
    from ._report_text import render_text

    command = args.command
    usage = _check_usage(args)
    if usage is not None:
        return _fail(args, EXIT_USAGE, "UsageError", usage)
    from ._config import ConfigError, selection

    try:
        chosen, config = selection(args)
    except ConfigError as error:
        return _fail(args, EXIT_USAGE, "UsageError", str(error))
    progress = _Progress(not args.quiet)
    try:
        document = build_report(
            args.path,
            command,
            depth=getattr(args, "depth", 1),
            save=args.save,
            all_saves=args.all_saves,
            progress=progress,
            selection=chosen,
        )
    except ReadError as error:
        progress.close()
        return fail_read(command, error, json_too=args.json, path=args.path)
    except (KeyError, ValueError) as error:  # --save NAME the run lacks; --all or --save off a run
        progress.close()
        message = str(error) if isinstance(error, ValueError) else f"{args.path}: {_no_save(args.path, args.save)}"
        return _fail(args, EXIT_USAGE, "UsageError", message)
    progress.close()
    document["selection"]["config"] = config
    status = EXIT_PROBLEMS if document["_failed"] else EXIT_OK
    if args.json:
        meaning = EXIT_MEANINGS[status]
        if chosen.fail_on != "error":  # the meanings say what the default --fail-on error means
            meaning = f"{'a' if status else 'no'} shown problem that fails with fail-on {chosen.fail_on}"
        document["exit"] = {"status": status, "meaning": meaning}
        print(json.dumps(_public(document), indent=2, default=str))
    elif not (args.quiet and command == "validate"):
        sys.stdout.write(render_text(document, color=_color(), validate_only=command == "validate"))
    return status


def _check_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments of inspect or validate, or None."""
    if getattr(args, "example", False):
        if args.path:
            return "give PATH or --example, not both"
        args.path = EXAMPLE
    if not args.path:  # inspect without PATH (validate's parser requires it)
        return "PATH is required (or --example)"
    if getattr(args, "depth", 1) < 0:
        return f"--depth {args.depth}: must be 0 or more"
    return None


def _no_save(path: str, name: str) -> str:
    from .._check._runs import scan_run

    return scan_run(path).no_save(name)


def _fail(
    args: argparse.Namespace, status: int, error: str, message: str, facts: dict[str, object] | None = None
) -> int:
    """Report a failure: one line on stderr, and with --json one document on stdout too."""
    path = getattr(args, "path", None)
    return fail(args.command, status, message, json_too=getattr(args, "json", False), path=path, error=error,
                facts=facts)  # fmt: skip


def _public(value: object) -> object:
    """The document without its text-only parts (keys starting with ``_``)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (``--help`` and ``--version`` raise SystemExit(0)).

    Everything, the parsing included, runs with the signal handlers set (:mod:`._signals`), so
    that Ctrl-C at any point ends with one line and 130; and with standard output's errors
    caught, so that ``--help > /dev/full`` ends with one line and 74 as every command does.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    _standard_streams()
    # The command's name for the messages until the arguments are parsed: the first word, if a command.
    command = next((a for a in arguments if not a.startswith("-")), None)
    name = command if command in COMMANDS else None
    from .._read._files import removed_temps
    from ._signals import handled, raise_swallowed

    removed_temps(reset=True)
    try:
        with handled():  # the handlers stay (once) while an interruption is cleaned up
            try:
                parsed = _parse(arguments)
                if isinstance(parsed, int):
                    return parsed
                name = parsed.command
                status = _run(parsed)
                raise_swallowed()  # a signal whose exception something turned into another outcome
                sys.stdout.flush()  # a closed pipe shows here, not at exit after main has returned
                return status
            except SystemExit:  # --help, --version: what they printed must be out before they exit 0
                sys.stdout.flush()
                raise
            except BrokenPipeError:  # e.g. `ckptkeys inspect . | head`: the reader has all it wanted
                _stdout_to_devnull()
                return EXIT_OK
            except OSError as error:
                if error.filename is not None:  # a file's error a command did not handle: not ours to hide
                    raise
                _stdout_to_devnull()  # standard output cannot be written (a full disk, /dev/full, closed)
                prog = f"ckptkeys {name}" if name is not None else "ckptkeys"
                print(f"{prog}: cannot write to standard output: {error.strerror or error}", file=sys.stderr)
                return EXIT_OUTPUT
            except Interrupted as interrupted:
                return _interrupted(name, interrupted)
    except Interrupted as interrupted:  # while the handlers were being set or put back
        return _interrupted(name, interrupted)


def _parse(arguments: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the status of an argument error, said in one line (and with
    ``--json`` in a document)."""
    try:
        return _parser().parse_args(arguments)
    except _UsageError as error:
        # One line, as every error: the option as typed and what is wrong; --help has the usage.
        message = str(error).removeprefix("argument ")
        command = arguments[0] if arguments and arguments[0] in COMMANDS else None
        prog = f"ckptkeys {command}" if command is not None else error.prog  # unrecognized arguments: the top's
        sys.stderr.write(f"{prog}: {message} (usage: {prog} --help)\n")
        if "--json" in arguments and command is not None:
            document = {
                "schema_version": 1,
                "command": arguments[0],
                "path": None,
                "error": {"type": "UsageError", "message": message},
                "exit": {"status": EXIT_USAGE, "meaning": EXIT_MEANINGS[EXIT_USAGE]},
            }
            print(json.dumps(document, indent=2))
        return EXIT_USAGE


class _ClosedOutput(io.TextIOBase):
    """Standard output where the process was started with it closed (``>&-``): Python's
    ``sys.stdout`` is None then, and writing to it fails as a write to a closed descriptor does,
    for main to say so (74) as of a full disk; a command that writes nothing there runs as usual."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "it is closed")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no file descriptor: standard output is closed")


def _standard_streams() -> None:
    """Make a closed standard output fail in writing (:class:`_ClosedOutput`), and a closed
    standard error swallow the messages (the status still says what happened)."""
    if sys.stdout is None:
        sys.stdout = cast(TextIO, _ClosedOutput())
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


def _interrupted(command: str | None, interrupted: Interrupted) -> int:
    """Remove what this process was still writing; say so in one line; the signal's exit status."""
    from .._read._files import remove_live_temps

    removed = remove_live_temps()
    what = f"; removed {removed} temporary file{'s' if removed != 1 else ''}" if removed else ""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _stdout_to_devnull()
    if sys.stderr.isatty():  # a progress line may be showing: the message replaces it
        sys.stderr.write("\r\033[K")
    prog = f"ckptkeys {command}" if command is not None else "ckptkeys"
    print(f"{prog}: interrupted ({interrupted.name}){what}", file=sys.stderr)
    return interrupted.status


def _run(args: argparse.Namespace) -> int:
    if args.command == "keys":
        return _keys(args)
    if args.command == "lint":
        return _lint(args)
    if args.command == "export":
        return run_export(args)
    return _check(args)


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit cannot fail again
    (and print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (a test's capture)
        pass
