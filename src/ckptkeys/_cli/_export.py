"""``ckptkeys export``: its arguments, the plan printed or written, its exit status (docs/export.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Final

from .._read._errors import ReadError
from .._read._source import is_url
from ._signals import raise_swallowed
from ._status import EXIT_OK, EXIT_OUTPUT, EXIT_PROBLEMS, EXIT_USAGE, OPTIONS, fail, fail_read
from ._storage import add_storage_options, storage_options

__all__ = ["add_export", "run_export"]


def _no_save(path: str, name: str) -> str:
    from .._check._runs import scan_run

    return scan_run(path).no_save(name)


def add_export(commands: argparse._SubParsersAction[Any]) -> None:
    text = "write a checkpoint's weights as safetensors (model.safetensors, or shards and an index)"
    command = commands.add_parser("export", help=text, description=text[0].upper() + text[1:] + ".")
    command.add_argument(
        "path", metavar="CHECKPOINT", help="run folder (its newest save, or --save), save folder (its latest tag, "
        "or --tag) or tag folder; or such a folder's URL (s3://, gs://, hf://: see --storage-options)"
    )  # fmt: skip
    command.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write into (created if absent)")
    command.add_argument("--save", metavar="NAME", help="a run: export the save NAME (default: the newest)")
    command.add_argument("--tag", help="the tag to export (default: the one 'latest' names)")
    command.add_argument(
        "--strip-prefix", metavar="PREFIX", help="take PREFIX off every name (Lightning's module attribute: model.)"
    )
    command.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="floating tensors' dtype: fp32 master weights (default), or auto = training precision",
    )
    command.add_argument("--max-shard-size", default="5GB", metavar="SIZE", help="shard above this (5GB; 500MB, 2GiB)")
    command.add_argument("--tp-rank", type=int, metavar="K", help="tensor parallel: export rank K's shard as it is")
    command.add_argument(
        "--weights",
        choices=("masters", "module"),
        default="masters",
        help="masters: the fp32 master weights (default); module: the module's weights as saved",
    )
    command.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    command.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON document")
    command.add_argument("--overwrite", action="store_true", help="replace an export already in OUT_DIR")
    command.add_argument("--shard", metavar="K/N", help="job K of N: write only output files K, K+N, ...; no index")
    command.add_argument("--index-only", action="store_true", help="write only model.safetensors.index.json")
    command.add_argument("--no-fsync", action="store_true", help="rename files without flushing them to disk first")
    command.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_storage_options(command)


class _ByteProgress:
    """``exporting 1.2/4.0 GB, 850 MB/s`` on stderr, only on a terminal, at most 10 times a second
    (``verb``: what the command says it is doing)."""

    def __init__(self, enabled: bool, verb: str = "exporting") -> None:
        import time

        self.verb = verb
        self.clock = time.monotonic
        self.enabled = enabled and sys.stderr.isatty()
        self.start = self.last = self.clock()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.enabled and (now - self.last >= 0.1 or done == total):
            rate = done / max(now - self.start, 1e-9) / 1e6
            sys.stderr.write(f"\r{self.verb} {done / 1e9:.2f}/{total / 1e9:.2f} GB, {rate:.0f} MB/s\033[K")
            sys.stderr.flush()
            self.last, self.shown = now, True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def run_export(args: argparse.Namespace) -> int:
    from .._export._entry import plan_export
    from .._export._types import ExportError, parse_size
    from .._export._write import parse_shard, write_export

    def failed(status: int, message: str, error: str = "UsageError") -> int:
        return fail("export", status, message, json_too=args.json, path=args.path, error=error)

    if args.json and not args.dry_run:
        return failed(EXIT_USAGE, "--json goes with --dry-run")
    if args.shard is not None and args.index_only:
        return failed(EXIT_USAGE, "--shard and --index-only go separately: the shard jobs first, then one "
                      "--index-only job")  # fmt: skip
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as error:
        return failed(EXIT_USAGE, str(error))
    try:
        parse_size(args.max_shard_size)
    except ExportError as error:  # an OptionError
        return failed(EXIT_USAGE, f"--max-shard-size {args.max_shard_size}: {error.reason}")
    try:
        options = storage_options(args.storage_options, args.path)
    except ValueError as error:
        return failed(EXIT_USAGE, str(error))
    if not is_url(args.path) and not os.path.lexists(args.path):  # as inspect and validate: a ReadError
        return fail_read("export", ReadError(args.path, "does not exist"), json_too=args.json, path=args.path)
    progress = _ByteProgress(not args.quiet)
    stale: list[str] = []
    try:
        plan = plan_export(args.path, tag=args.tag, dtype=args.dtype, max_shard_size=args.max_shard_size,
                           tp_rank=args.tp_rank, save=args.save, strip_prefix=args.strip_prefix,
                           weights=args.weights, storage_options=options)  # fmt: skip
        if args.dry_run:
            if args.json:
                print(json.dumps(plan.as_dict(), indent=2))
            else:
                sys.stdout.write(_render_plan(plan))
            return EXIT_OK
        written = write_export(
            plan,
            args.out_dir,
            overwrite=args.overwrite,
            progress=progress,
            shard=shard,
            index_only=args.index_only,
            fsync=not args.no_fsync,
            leftovers=stale.extend,
        )
    except KeyError as error:  # --save NAME the run lacks
        if args.save is None or error.args != (args.save,):
            raise
        progress.close()
        return failed(EXIT_USAGE, f"{args.path}: {_no_save(args.path, args.save)}")
    except BrokenPipeError:  # `--dry-run | head`: main's to handle, not an error of the export
        raise
    except (ValueError, ReadError, ExportError, ImportError, OSError) as error:
        progress.close()
        raise_swallowed()  # an error made of a signal's exception (a lazy import interrupted) is the signal
        if isinstance(error, OSError) and error.filename is None:  # standard output: main says so (74)
            raise
        message, status = _failure(error, args)
        if isinstance(error, ReadError):  # its code and globals too, as inspect and validate give them
            return fail_read("export", error, json_too=args.json, path=args.path, status=status)
        return failed(status, message, "UsageError" if isinstance(error, ValueError) else type(error).__name__)
    except BaseException:  # a signal (main says so): its line must not follow the progress bar's
        progress.close()
        raise
    progress.close()
    if stale:
        print(f"removed {len(stale)} temporary file(s) an interrupted export had left in {args.out_dir}",
              file=sys.stderr)  # fmt: skip
    print(_summary(plan, written, shard, args.out_dir), file=sys.stderr)
    for line in _name_notes(plan):
        print(line, file=sys.stderr)
    return EXIT_OK


def _failure(error: Exception, args: argparse.Namespace) -> tuple[str, int]:
    """The line an error of ``export`` prints (options as typed) and its exit status (``_status``)."""
    from .._export._cast import NumpyMissingError
    from .._export._types import ExportError, OptionError
    from .._export._write import OutputFolderError
    from .._read._errors import NotACheckpointError

    if isinstance(error, NumpyMissingError):  # an extra to install, or options that need none: usage
        ways = [" ".join(f"{_TYPED.get(key, key)} {value}" for key, value in way) for way in error.ways]
        plural = "s" if len(ways) == 1 else ""
        tail = f"; or {' or '.join(ways)}, which need{plural} no numpy for this checkpoint" if ways else ""
        return f"{error.path}: {error.needs}{tail}", EXIT_USAGE
    if isinstance(error, ExportError):
        if isinstance(error, OptionError) and error.path == error.option:  # no file at fault: the option
            return f"{_TYPED.get(error.option, error.option)}: {error.reason}", EXIT_USAGE
        if error.option is not None:  # an argument at fault, or one that resolves it: usage
            hint = _HINTS.get(error.option, OPTIONS.get(error.option, _TYPED.get(error.option, "")))
            return f"{error}; {hint}" if hint else str(error), EXIT_USAGE
        if isinstance(error, OutputFolderError):  # the folder cannot be created or written in
            return str(error), EXIT_OUTPUT
        return str(error), EXIT_PROBLEMS  # the checkpoint: an error validate reports, a layout not exported
    if isinstance(error, ReadError):
        # CHECKPOINT itself is no checkpoint folder: unreadable input. A file inside that cannot
        # be read is an error problem of the checkpoint, as validate reports it.
        given = os.path.normpath(error.path) == os.path.normpath(args.path)
        if type(error) is ReadError and is_url(error.path):  # the store (access, network, a changed object)
            given = True
        return str(error), EXIT_USAGE if given or isinstance(error, NotACheckpointError) else EXIT_PROBLEMS
    if isinstance(error, OSError):
        written = error.filename is not None and _inside(str(error.filename), args.out_dir)
        name = error.filename if error.filename is not None else args.path
        return f"{name}: {error.strerror or error}", EXIT_OUTPUT if written else EXIT_USAGE
    return str(error), EXIT_USAGE  # ValueError (a bad --max-shard-size, --save off a run), ImportError (numpy)


# The options ``ExportError.option`` names, as typed here, and what the command adds for those
# the shared table (``_status.OPTIONS``) does not hold, or holds with a hint not true of export.
_TYPED: Final = {
    "tag": "--tag",
    "save": "--save",
    "dtype": "--dtype",
    "weights": "--weights",
    "tp_rank": "--tp-rank",
    "strip_prefix": "--strip-prefix",
    "max_shard_size": "--max-shard-size",
    "overwrite": "--overwrite",
    "shard": "--shard",
    "index_only": "--index-only",
    "out_dir": "OUT_DIR",
}
_HINTS: Final = {
    "strip_prefix": "--strip-prefix takes a prefix every name has",
    "save": "--save is for a run folder (it chooses one of its saves)",
}


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(os.path.join(folder, ""))


def _summary(plan: Any, written: list[str], shard: tuple[int, int] | None, out_dir: str) -> str:
    """What this job wrote: its files and their bytes (a ``--shard`` job's own, not the export's)."""
    if shard is not None and not written:  # a job array may have more jobs than the export has files
        files = f"{len(plan.shards)} file{'s' if len(plan.shards) != 1 else ''}"
        return f"job {shard[0]} of {shard[1]} has no file to write (the export has {files})"
    size = 0
    for path in written:
        with contextlib.suppress(OSError):
            size += os.path.getsize(path)
    names = [os.path.basename(p) for p in written]
    listed = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
    if shard is not None:
        job = f" (job {shard[0]} of {shard[1]}: {len(written)} of the export's {len(plan.shards)} files)"
    else:
        job = ""
    return f"wrote {len(written)} file(s), {size} bytes ({_weights_written(plan)}), to {out_dir}: {listed}{job}"


def _name_notes(plan: Any) -> list[str]:
    """The tied aliases written once, and the prefix every name shares (a suggestion to strip it)."""
    lines = [f"{alias} = {owner}: written once; from_pretrained re-ties it" for alias, owner in plan.aliases.items()]
    prefix = plan.common_prefix
    if prefix is not None:
        lines.append(f"every name starts with {prefix!r}: --strip-prefix {prefix} takes it off (a module attribute)")
    return lines


def _weights_written(plan: Any) -> str:
    """Which weights the plan writes, for the summary line and ``--dry-run``."""
    if plan.weights == "module":
        return "the module's weights as saved (--weights module)"
    return "fp32 master weights"


def _render_plan(plan: Any) -> str:
    lines = [
        f"checkpoint  {plan.checkpoint} (tag {plan.tag}, {plan.layout}, trained in {plan.precision})",
        f"weights     {_weights_written(plan)}",
        f"output      {len(plan.tensors)} tensors, {plan.total_size} bytes, dtype {plan.dtype}, "
        f"{len(plan.shards)} file(s)" + (" + model.safetensors.index.json" if plan.sharded else ""),
    ]
    for shard in plan.shards:
        lines.append(f"  {shard.filename}  {shard.nbytes} bytes")
        by_name = {t.name: t for t in plan.tensors}
        for name in shard.tensors:
            t = by_name[name]
            lines.append(f"    {name}  {t.dtype}{list(t.shape)}  <- {t.source_dtype} ({t.origin})")
    for path in plan.side_files:
        lines.append(f"  side file: {path}")
    lines += _name_notes(plan)
    return "\n".join(lines) + "\n"
