"""The ``ckptkeys`` command line."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO, cast

from .._keys import _registry, _render
from .._keys._strenum import KeyGroup
from .._read._errors import ReadError
from ._export import add_export, run_export
from ._lint import add_lint, run_lint
from ._signals import Interrupted
from ._universal import add_universal, run_universal
from ._status import EXIT_MEANINGS, EXIT_OK, EXIT_OUTPUT, EXIT_PROBLEMS, EXIT_USAGE, fail, fail_read
from ._storage import add_storage_options, storage_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import SupportsWrite


__all__ = ["main"]

# The small real DeepSpeed checkpoint shipped in the package, for `inspect --example`.
EXAMPLE = os.path.join(os.path.dirname(__file__), "_example", "z2_bf16_ws2")
# The commands, every one of which takes --json.
COMMANDS = ("keys", "inspect", "validate", "lint", "export", "universal")
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
            help="run folder, save folder, tag folder or checkpoint file; or its URL (s3://, gs://, hf://, ...)",
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
        add_storage_options(command)
        if name == "inspect":
            command.add_argument("--depth", type=int, default=1, metavar="N", help="levels of the key trees (1)")
            command.add_argument(
                "--example", action="store_true", help="inspect the small DeepSpeed checkpoint shipped with ckptkeys"
            )
    add_lint(commands)
    add_export(commands)
    add_universal(commands)
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
    try:
        options = storage_options(args.storage_options, args.path)
    except ValueError as error:
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
            storage_options=options,
        )
    except ReadError as error:
        progress.close()
        return fail_read(command, error, json_too=args.json, path=args.path)
    except (KeyError, ValueError) as error:  # --save NAME the run lacks; --all or --save off a run
        progress.close()
        if isinstance(error, ValueError):
            message = str(error)
        else:
            message = f"{args.path}: {_no_save(args.path, args.save, options)}"
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


def _no_save(path: str, name: str, options: dict[str, Any] | None) -> str:
    from .._check._runs import scan_run

    return scan_run(path, storage_options=options).no_save(name)


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
        return run_lint(args)
    if args.command == "export":
        return run_export(args)
    if args.command == "universal":
        return run_universal(args)
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
