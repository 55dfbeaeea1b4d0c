"""``ckptkeys universal``: its arguments, the plan printed or written, the summary, its exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Final

from .._read._errors import ReadError
from ._export import _ByteProgress
from ._signals import raise_swallowed
from ._status import EXIT_OK, EXIT_OUTPUT, EXIT_PROBLEMS, EXIT_USAGE, OPTIONS, fail, fail_read

__all__ = ["add_universal", "run_universal"]

# What every summary and dry run ends with when the loader leaves tensors as the model was built.
WAY_OUT: Final = "load them from the model states (mp_rank_*_model_states.pt's 'module') or the pretrained weights"


def add_universal(commands: argparse._SubParsersAction[Any]) -> None:
    text = "convert a checkpoint to DeepSpeed's universal format (resume on another number of GPUs)"
    command = commands.add_parser("universal", help=text, description=text[0].upper() + text[1:] + ".")
    command.add_argument(
        "path", metavar="CHECKPOINT", help="run folder (its newest save), save folder (its latest tag, or --tag) or "
        "tag folder"
    )  # fmt: skip
    command.add_argument("--tag", help="the tag to convert (default: the one 'latest' names)")
    command.add_argument(
        "--output-folder", metavar="D", help="write the universal tag here (default: <save>/<tag>_universal)"
    )
    command.add_argument(
        "--inject-missing-state",
        action="store_true",
        help="as ds_to_universal's: convert a save without universal_checkpoint_info (Trainer, Accelerate, Lightning)",
    )
    command.add_argument(
        "--no-strict", action="store_true", help="as ds_to_universal's: an unused tensor-parallel pattern is no error"
    )
    command.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    command.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON document")
    command.add_argument("--overwrite", action="store_true", help="replace a universal tag already there")
    jobs = command.add_mutually_exclusive_group()
    jobs.add_argument(
        "--shard", metavar="K/N", help="job K of N: write only the zero/<param>/ files of parameters K, K+N, ..."
    )
    jobs.add_argument("--finalize", action="store_true", help="after the --shard jobs: check their files, publish")
    command.add_argument("--no-fsync", action="store_true", help="rename files without flushing them to disk first")
    command.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run_universal(args: argparse.Namespace) -> int:
    from .._export._types import ExportError
    from .._export._write import parse_shard
    from .._universal._entry import plan_universal
    from .._universal._write import write_universal

    def failed(status: int, message: str, error: str = "UsageError") -> int:
        return fail("universal", status, message, json_too=args.json, path=args.path, error=error)

    if args.json and not args.dry_run:
        return failed(EXIT_USAGE, "--json goes with --dry-run")
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as error:
        return failed(EXIT_USAGE, str(error))
    if not os.path.lexists(args.path):  # as inspect, validate and export: a ReadError
        return fail_read("universal", ReadError(args.path, "does not exist"), json_too=args.json, path=args.path)
    progress = _ByteProgress(not args.quiet, "converting")
    try:
        plan = plan_universal(args.path, tag=args.tag, output_folder=args.output_folder,
                              inject_missing_state=args.inject_missing_state, strict=not args.no_strict)  # fmt: skip
        if args.dry_run:
            if args.json:
                print(json.dumps(plan.as_dict(), indent=2))
            else:
                sys.stdout.write(render_plan(plan))
            return EXIT_OK
        written = write_universal(plan, overwrite=args.overwrite, shard=shard, finalize=args.finalize,
                                  progress=progress, fsync=not args.no_fsync)  # fmt: skip
    except BrokenPipeError:  # `--dry-run | head`: main's to handle
        raise
    except (ValueError, ReadError, ExportError, OSError) as error:
        progress.close()
        raise_swallowed()  # an error made of a signal's exception is the signal
        if isinstance(error, OSError) and error.filename is None:  # standard output: main says so (74)
            raise
        message, status = _failure(error, args)
        if isinstance(error, ReadError):
            return fail_read("universal", error, json_too=args.json, path=args.path, status=status)
        return failed(status, message, "UsageError" if isinstance(error, ValueError) else type(error).__name__)
    except BaseException:  # a signal (main says so): its line must not follow the progress bar's
        progress.close()
        raise
    progress.close()
    for line in summary(plan, written, shard, args.finalize):
        print(line, file=sys.stderr)
    return EXIT_OK


# The keyword arguments ``ExportError.option`` names, as typed here; and what to add for those the
# shared table (``_status.OPTIONS``) has no true hint for.
_TYPED: Final = {
    "tag": "--tag",
    "output_folder": "--output-folder",
    "inject_missing_state": "--inject-missing-state",
    "strict": "--no-strict",
    "overwrite": "--overwrite",
    "shard": "--shard",
    "finalize": "--finalize",
}
_HINTS: Final = {
    "inject_missing_state": "--inject-missing-state converts it (as ds_to_universal's --inject_missing_state)",
    "strict": "--no-strict lets it through (as ds_to_universal's --no_strict)",
    "output_folder": "",
    "finalize": "",
}


def _failure(error: Exception, args: argparse.Namespace) -> tuple[str, int]:
    """The line an error prints (options as typed) and its exit status (``_status``)."""
    from .._export._types import ExportError, OptionError
    from .._export._write import OutputFolderError
    from .._read._errors import NotACheckpointError

    if isinstance(error, ExportError):
        if isinstance(error, OptionError) and error.path == error.option:  # no file at fault: the option
            return f"{_TYPED.get(error.option, error.option)}: {error.reason}", EXIT_USAGE
        if error.option is not None:
            hint = _HINTS.get(error.option, OPTIONS.get(error.option, _TYPED.get(error.option, "")))
            if error.option == "finalize":  # the job array's state: the checkpoint's output is not as planned
                return str(error), EXIT_PROBLEMS
            return f"{error}; {hint}" if hint else str(error), EXIT_USAGE
        if isinstance(error, OutputFolderError):
            return str(error), EXIT_OUTPUT
        return str(error), EXIT_PROBLEMS
    if isinstance(error, ReadError):
        given = os.path.normpath(error.path) == os.path.normpath(args.path)
        return str(error), EXIT_USAGE if given or isinstance(error, NotACheckpointError) else EXIT_PROBLEMS
    if isinstance(error, OSError):
        name = error.filename if error.filename is not None else args.path
        return f"{name}: {error.strerror or error}", EXIT_OUTPUT
    return str(error), EXIT_USAGE


def not_restored_lines(plan: Any) -> list[str]:
    """The tensors DeepSpeed's universal loader leaves as the model was built, and the way out."""
    if not plan.not_restored:
        return []
    kinds = {n.kind for n in plan.not_restored}
    named = (("frozen", "frozen parameters"), ("buffer", "buffers"))
    what = " and ".join(text for kind, text in named if kind in kinds)
    lines = [f"DeepSpeed's universal loader does not restore {len(plan.not_restored)} tensor(s) ({what}):"]
    for item in plan.not_restored:
        where = f"; values in {item.file}" if item.file is not None else "; no file holds them"
        lines.append(f"  {item.name} ({item.kind}{where})")
    lines.append(f"  {WAY_OUT}")
    return lines


def summary(plan: Any, written: list[str], shard: tuple[int, int] | None, finalize: bool) -> list[str]:
    """What this run wrote (a ``--shard`` job's own files), then what the loader will not restore."""
    size = sum(f.nbytes for f in plan.files)
    if shard is not None:
        staged = len([f for f in plan.files if f.param is not None])
        if not written:
            return [f"job {shard[0]} of {shard[1]} has no parameter to write (the tag has {len(plan.params)})"]
        return [f"job {shard[0]} of {shard[1]}: wrote {len(written)} of the tag's {staged} zero/<param>/ files "
                f"(staged beside {plan.output}); one --finalize run then checks them all and publishes it"]  # fmt: skip
    how = "checked the jobs' files, " if finalize else ""
    line = (f"{how}wrote {plan.output} ({len(plan.files)} files, {size} bytes of tensors and copies) "
            f"and {plan.latest} naming it")  # fmt: skip
    return [line, *not_restored_lines(plan)]


def render_plan(plan: Any) -> str:
    """``--dry-run``: the source, the output, every file with its bytes, what is not restored."""
    lines = [
        f"checkpoint  {plan.checkpoint} (tag {plan.tag}, {plan.layout}, ZeRO stage {plan.zero_stage})",
        f"output      {plan.output}: {len(plan.files)} files, {plan.total_size} bytes; then {plan.latest}",
    ]
    for file in plan.files:
        what = f"copy of {file.copy_of}" if file.copy_of is not None else "written"
        lines.append(f"  {file.name}  {file.nbytes} bytes ({what})")
    lines += not_restored_lines(plan)
    return "\n".join(lines) + "\n"
