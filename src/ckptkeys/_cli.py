"""The ``ckptkeys`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _registry, _render
from ._strenum import KeyGroup

__all__ = ["main"]

# Exit statuses (documented in docs/cli.md).
EXIT_OK = 0
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckptkeys", description="A typed vocabulary for DeepSpeed checkpoints.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    keys = commands.add_parser("keys", help="print the key registry", description="Print the key registry.")
    keys.add_argument("group", nargs="?", metavar="GROUP", help="one group, e.g. OptimizerKeys (default: all)")
    form = keys.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true", help="Markdown, as in docs/keys.md")
    form.add_argument("--json", action="store_true", help="one JSON document")
    return parser


def _groups(name: str | None) -> tuple[type[KeyGroup], ...] | str:
    """The groups to print, or an error message."""
    if name is None:
        return _registry.GROUPS
    for group in _registry.GROUPS:
        if group.__name__.lower() == name.lower():
            return (group,)
    known = ", ".join(group.__name__ for group in _registry.GROUPS)
    return f"unknown group {name!r}; the groups are: {known}"


def _keys(args: argparse.Namespace) -> int:
    groups = _groups(args.group)
    if isinstance(groups, str):
        print(f"ckptkeys keys: {groups}", file=sys.stderr)
        return EXIT_USAGE
    if args.markdown:
        text = _render.render_markdown(groups)
    elif args.json:
        text = _render.render_json(groups)
    else:
        text = _render.render_text(groups)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _keys(args)
    except BrokenPipeError:  # e.g. `ckptkeys keys | head`
        sys.stderr.close()
        return EXIT_OK
