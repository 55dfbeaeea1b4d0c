"""The generated parts of the docs that describe code: docs/api.md and docs/cli.md's synopses.

``docs/api.md`` lists every public name (``__all__``) of ``ckptkeys`` and of its public modules
with ``__all__``: its kind, its signature as written in the source (annotations are strings
under ``from __future__ import annotations``, shown as written, so the page is the same on
every Python 3.10-3.13) and the first paragraph of its docstring. Signatures are fenced as
``py``, not ``python``: they are not programs, and ``python`` blocks are the docs' examples
(tests/doc_examples.py). ``docs/cli.md`` holds, for
every command, a block between markers: the synopsis and the options, built from the argument
parser. ``docs/lint.md`` holds ``lint``'s option table (from the parser) and the table of the keys
of ``[tool.ckptkeys.lint]`` (from ``_cli/_config.py``'s ``LINT_KEYS`` and ``LINT_KEY_DOCS``).
``python scripts/regen.py`` rewrites them all; ``tests/test_api_doc.py`` fails when one is stale.
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Final

from ckptkeys._keys import _render
from ckptkeys._keys._strenum import KeyGroup

REFRESH: Final = "python scripts/regen.py"

# The public modules documented after the package itself (``constants`` is the shim: keys.md).
MODULES: Final = ("ckptkeys", "ckptkeys.naming", "ckptkeys.schema", "ckptkeys.writing", "ckptkeys.lint")

# The sections of the package's own names, by the private module that defines them (the first
# prefix that matches); exceptions go to "Errors" wherever they are defined. A name the map does
# not place lands in "Other", so a new public name is never left out.
SECTIONS: Final = (
    ("Key groups", ("_keys",)),
    ("Reading one file", ("_read",)),
    ("Folders and runs", ("_check._layout", "_check._runs")),
    ("Validation", ("_check",)),
    ("Export", ("_export",)),
    ("Universal", ("_universal",)),
    ("Errors", ()),
    ("Other", ()),
)

# Longer signatures and constants are shown one item a line.
WIDTH: Final = 100


class _Text(str):
    """An annotation shown exactly as written: ``inspect`` formats annotations with ``repr``."""

    def __repr__(self) -> str:
        return str(self)


def _annotation(annotation: object) -> object:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Text(annotation)
    return _Text(inspect.formatannotation(annotation))


def signature(obj: object, *, drop_return: bool = False) -> str | None:
    """``obj``'s signature with its annotations as written, or None where Python knows none."""
    try:
        found = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    parameters = [p.replace(annotation=_annotation(p.annotation)) for p in found.parameters.values()]
    returned = inspect.Signature.empty if drop_return else _annotation(found.return_annotation)
    text = str(found.replace(parameters=parameters, return_annotation=returned))
    if re.search(r" at 0x[0-9a-f]+", text):  # a default without a stable repr
        raise ValueError(f"{obj!r}: a default's repr is not stable: {text}")
    return text


def wrapped(name: str, shown: str) -> str:
    """``name(parameters) -> R`` on one line, or one parameter a line past ``WIDTH`` characters."""
    if len(name) + len(shown) <= WIDTH:
        return name + shown
    close = _closing(shown, 0)
    parameters = _split_top_level(shown[1:close])
    return "\n".join([f"{name}(", *(f"    {p}," for p in parameters), ")" + shown[close + 1 :]])


def _outside_quotes(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """Each character of ``text`` from ``start`` that is outside quotes, with its index and the
    bracket depth after it (an opening bracket counts in, a closing one out)."""
    depth, quote = 0, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            depth += 1 if char in "([{" else -1 if char in ")]}" else 0
            yield index, char, depth


def _closing(text: str, start: int) -> int:
    """The index of the bracket closing the one at ``start``, skipping quoted text."""
    for index, char, depth in _outside_quotes(text, start):
        if char in ")]}" and depth == 0:
            return index
    raise ValueError(f"unbalanced: {text}")


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    parts, start = [], 0
    for index, char, depth in _outside_quotes(text):
        if char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def value_text(value: object) -> str:
    """A constant as Python would spell it, members and classes by name, long ones one item a line."""
    if isinstance(value, KeyGroup):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (tuple, list)):
        items = [value_text(item) for item in value]
        brackets = "()" if isinstance(value, tuple) else "[]"
        one_line = ", ".join(items) + ("," if len(items) == 1 and isinstance(value, tuple) else "")
        if len(one_line) <= WIDTH - 40:
            return brackets[0] + one_line + brackets[1]
        return "\n".join([brackets[0], *(f"    {item}," for item in items), brackets[1]])
    if isinstance(value, dict):
        items = [f"{value_text(k)}: {value_text(v)}" for k, v in value.items()]
        if len(", ".join(items)) <= WIDTH - 40:
            return "{" + ", ".join(items) + "}"
        return "\n".join(["{", *(f"    {item}," for item in items), "}"])
    return repr(value)


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line, as Markdown."""
    if not doc:
        return ""
    first = inspect.cleandoc(doc).split("\n\n")[0]
    return _render._markdown(" ".join(first.split()), ())


def _attribute_docs(module: types.ModuleType) -> dict[str, str]:
    """The docstrings written under module-level assignments (``NAME: Final = ...`` then a string)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body
    for statement, following in zip(body, body[1:]):
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    docs[target.id] = following.value.value
    return docs


def _defining_module(package: types.ModuleType, name: str) -> str:
    """The module (relative to ckptkeys) that defines one of the package's public names."""
    lazy: dict[str, str] = getattr(package, "_LAZY", {})
    if name in lazy:
        return lazy[name]
    value = getattr(package, name)
    module = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None
    return module.removeprefix("ckptkeys.") if isinstance(module, str) else ""


def _literal(value: object) -> tuple[object, ...] | None:
    """The values of a ``Literal[...]`` alias (``Dtype``), or None for anything else."""
    return typing.get_args(value) if typing.get_origin(value) is typing.Literal else None


def _kind(value: object) -> str:
    if _literal(value) is not None:
        return "type alias"
    if isinstance(value, type):
        if issubclass(value, KeyGroup) and value is not KeyGroup:
            return f"key group, {len(value)} members"
        if _typed_dict_fields(value) is not None:
            return "TypedDict"
        if issubclass(value, BaseException):
            bases = ", ".join(f"`{base.__name__}`" for base in value.__bases__)
            return f"exception ({bases})"
        if issubclass(value, enum.Enum):
            return "enum"
        if _is_protocol(value):
            return "protocol"
        if getattr(value, "__dataclass_fields__", None) is not None:
            return "dataclass"
        return "class"
    if isinstance(value, types.FunctionType) or inspect.isbuiltin(value):
        return "function"
    if isinstance(value, str) and re.fullmatch(r"\d+\.\d+\.\d+\S*", value):
        return "version"
    return f"constant ({type(value).__name__})"


def _typed_dict_fields(value: type) -> list[str] | None:
    """A TypedDict's base and its fields as written in the source (so the same on every Python), or None."""
    if not (issubclass(value, dict) and hasattr(value, "__required_keys__")):
        return None
    source = inspect.getsource(value)
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    bases = ", ".join(ast.get_source_segment(source, base) or "" for base in node.bases)
    fields = [
        f"{ast.get_source_segment(source, item.target)}: {ast.get_source_segment(source, item.annotation)}"
        for item in node.body
        if isinstance(item, ast.AnnAssign)
    ]
    return [bases, *fields]


def _is_protocol(value: type) -> bool:
    return bool(getattr(value, "_is_protocol", False))


def _entry(qualified: str, name: str, value: object, doc: str | None) -> list[str]:
    kind = _kind(value)
    lines = [f"### `{qualified}`", "", f"*{kind}*", ""]
    values = _literal(value)
    if values is not None:
        spelled = ", ".join(repr(v) for v in values)
        if len(name) + len(spelled) + 12 <= WIDTH:
            lines += ["```py", f"{name} = Literal[{spelled}]", "```", ""]
        else:
            lines += ["```py", f"{name} = Literal[", *(f"    {v!r}," for v in values), "]", "```", ""]
    elif isinstance(value, type) and issubclass(value, KeyGroup) and value is not KeyGroup:
        lines += [f"Its members: [keys.md](keys.md#{name.lower()}).", ""]
    elif isinstance(value, type) and issubclass(value, enum.Enum):
        members = ", ".join(f"`{member.name}`" for member in value)
        lines += [f"Members: {members}.", ""]
    elif isinstance(value, type) and issubclass(value, BaseException):
        pass  # an exception's constructor is BaseException's, or an internal detail
    elif isinstance(value, type):
        fields = _typed_dict_fields(value)
        shown = signature(value, drop_return=True)
        if fields is not None:
            lines += ["```py", f"class {name}({fields[0]}):", *(f"    {field}" for field in fields[1:]), "```", ""]
        elif shown is not None and not _is_protocol(value):
            lines += ["```py", wrapped(name, shown), "```", ""]
    elif callable(value):
        shown = signature(value)
        if shown is not None:
            lines += ["```py", wrapped(name, shown), "```", ""]
    else:
        lines += ["```py", f"{name} = {value_text(value)}", "```", ""]
    text = summary(doc)
    if text:
        lines += [text, ""]
    return lines


def _doc_of(value: object, attribute_doc: str | None) -> str | None:
    if attribute_doc is not None:
        return attribute_doc
    if _literal(value) is not None:
        own = value.__dict__.get("__doc__")  # an alias's own, not its class's
        return own if isinstance(own, str) else None
    if isinstance(value, type) or callable(value):
        own = value.__dict__.get("__doc__") if isinstance(value, type) else getattr(value, "__doc__", None)
        if isinstance(own, str) and not (isinstance(value, type) and own.startswith(f"{value.__name__}(")):
            return own  # a dataclass without a docstring gets its signature as __doc__: not a description
    return None


def _package_names(package: types.ModuleType) -> Iterator[tuple[str, list[str]]]:
    """The package's names by section, each section in case-insensitive order."""
    placed: dict[str, list[str]] = {title: [] for title, _ in SECTIONS}
    for name in package.__all__:
        value = getattr(package, name)
        where = _defining_module(package, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            placed["Errors"].append(name)
            continue
        title = next(
            (t for t, prefixes in SECTIONS if any(where == p or where.startswith(p + ".") for p in prefixes)),
            "Other",
        )
        placed[title].append(name)
    for title, _ in SECTIONS:
        if placed[title]:
            yield title, sorted(placed[title], key=lambda n: (n.lower(), n))


def _module_docs(name: str) -> dict[str, str]:
    module = importlib.import_module(f"ckptkeys.{name}") if name else importlib.import_module("ckptkeys")
    return _attribute_docs(module)


def render_api() -> str:
    """docs/api.md."""
    package = importlib.import_module("ckptkeys")
    modules = [importlib.import_module(name) for name in MODULES[1:]]
    counts = ", ".join(f"`{m.__name__}` {len(m.__all__)}" for m in [package, *modules])
    lines = [
        "# API reference",
        "",
        f"<!-- Generated by `{REFRESH}` from `__all__` and the docstrings; a test fails when this file is stale. -->",
        "",
        (
            f"Every public name: {counts}. Each with its kind, its signature as written in the source, "
            "and the first paragraph of its docstring; the pages linked from the [README](../README.md#documentation) "
            "say more. The key groups' members are in [keys.md](keys.md); `ckptkeys.constants`, the drop-in for "
            "`deepspeed.checkpoint.constants`, holds the same strings under DeepSpeed's names."
        ),
        "",
    ]
    toc = [f"- `{package.__name__}`: {summary(package.__doc__).removeprefix('ckptkeys: ')}"]
    body: list[str] = []
    doc_cache: dict[str, dict[str, str]] = {}
    for title, names in _package_names(package):
        heading = f"`{package.__name__}`: {title.lower()}"
        toc.append(f"  - [{title}](#{_anchor(heading)})")
        body += [f"## {heading}", ""]
        for name in names:
            value = getattr(package, name)
            where = _defining_module(package, name)
            docs = doc_cache.setdefault(where, _module_docs(where))
            body += _entry(f"ckptkeys.{name}", name, value, _doc_of(value, docs.get(name)))
    for module in modules:
        toc.append(f"- [`{module.__name__}`](#{_anchor(module.__name__)})")
        body += [f"## `{module.__name__}`", "", summary(module.__doc__), ""]
        docs = _attribute_docs(module)
        for name in sorted(module.__all__, key=lambda n: (n.lower(), n)):
            value = getattr(module, name)
            body += _entry(f"{module.__name__}.{name}", name, value, _doc_of(value, docs.get(name)))
    return "\n".join([*lines, *toc, "", *body]).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


# --- docs/cli.md: the synopses ---------------------------------------------------------------

BEGIN: Final = "<!-- synopsis of `ckptkeys {command}`: generated by `" + REFRESH + "` from the argument parser -->"
END: Final = "<!-- end of the synopsis -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None:
        return "|".join(str(choice) for choice in action.choices)
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper()


def _option(action: argparse.Action) -> str:
    """One option as the synopsis shows it, without brackets."""
    if isinstance(action, argparse.BooleanOptionalAction):  # --x and --no-x: both spelled
        return " | ".join(action.option_strings)
    flag = max(action.option_strings, key=len)  # --quiet rather than -q
    if action.nargs == 0:
        return flag
    return f"{flag} {_metavar(action)}"


def _positional(action: argparse.Action) -> str:
    name = _metavar(action)
    if action.nargs == "?":
        return f"[{name}]"
    if action.nargs in ("+", "*"):
        return f"{name}..." if action.nargs == "+" else f"[{name}...]"
    return name


def synopsis(name: str, parser: argparse.ArgumentParser) -> str:
    """``ckptkeys NAME`` with every positional and option of its parser, in the parser's order;
    the options of a mutually exclusive group as ``[--a | --b X]``."""
    groups = {id(action): group for group in parser._mutually_exclusive_groups for action in group._group_actions}
    parts = [_positional(a) for a in parser._actions if not a.option_strings]
    shown: set[int] = set()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction) or id(action) in shown:
            continue
        group = groups.get(id(action))
        members = group._group_actions if group is not None else [action]
        shown.update(id(a) for a in members)
        parts.append("[" + " | ".join(_option(a) for a in members) + "]")
    return " ".join([f"ckptkeys {name}", *parts])


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" in text:
        text = text % {"default": action.default}
    return _render._escape(text)


def options_table(parser: argparse.ArgumentParser) -> list[str]:
    lines = ["| Argument | |", "|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            flags = sorted(action.option_strings, key=lambda f: (-len(f), f))
            spelled = flags if action.nargs == 0 else [f"{flag} {_metavar(action)}" for flag in flags[:1]] + flags[1:]
            shown = ", ".join(f"`{text}`" for text in spelled)
        else:
            shown = f"`{_positional(action)}`"
        # GFM splits a row at every unescaped pipe, inside code spans too.
        lines.append(f"| {shown.replace('|', chr(92) + '|')} | {_help(action)} |")
    return lines


def synopsis_block(name: str, parser: argparse.ArgumentParser) -> list[str]:
    return [BEGIN.format(command=name), f"## `{synopsis(name, parser)}`", "", *options_table(parser), END]


def render_cli(text: str, parser: argparse.ArgumentParser) -> str:
    """docs/cli.md with every command's block refreshed; a command without one is an error."""
    commands = _subcommands(parser)
    for name, command in commands.items():
        begin = BEGIN.format(command=name)
        if begin not in text:
            raise ValueError(f"docs/cli.md has no block for `ckptkeys {name}`: add the line {begin} and {END}")
        start = text.index(begin)
        end = text.index(END, start) + len(END)
        text = text[:start] + "\n".join(synopsis_block(name, command)) + text[end:]
    stray = set(re.findall(r"<!-- synopsis of `ckptkeys (\S+)`", text)) - set(commands)
    if stray:
        raise ValueError(f"docs/cli.md has a block for commands the parser lacks: {sorted(stray)}")
    return text


# --- docs/lint.md: the option table and the table of [tool.ckptkeys.lint] ------------------------

LINT_OPTIONS: Final = "<!-- options of `ckptkeys lint`: generated by `" + REFRESH + "` from the argument parser -->"
LINT_KEYS: Final = "<!-- keys of [tool.ckptkeys.lint]: generated by `" + REFRESH + "` from _cli/_config.py -->"
END_TABLE: Final = "<!-- end of the generated table -->"


def lint_keys_table() -> list[str]:
    """Each key of ``[tool.ckptkeys.lint]``: its type (what ``_config`` checks), default, meaning."""
    from ckptkeys._cli._config import LINT_KEY_DOCS, LINT_KEYS as KEYS

    if set(LINT_KEY_DOCS) != set(KEYS):
        raise ValueError(
            f"_cli/_config.py: LINT_KEY_DOCS and LINT_KEYS differ: {sorted(set(LINT_KEY_DOCS) ^ set(KEYS))}"
        )
    lines = ["| Key | Type | Default | Meaning (as ruff's key of the same name) |", "|---|---|---|---|"]
    for key, kind in KEYS.items():
        default, meaning = LINT_KEY_DOCS[key]
        lines.append(f"| `{key}` | {kind} | {default} | {meaning} |")
    return lines


def _replace_between(text: str, begin: str, lines: list[str], where: str) -> str:
    if begin not in text:
        raise ValueError(f"{where} has no generated table: add the lines {begin} and {END_TABLE}")
    start = text.index(begin)
    end = text.index(END_TABLE, start) + len(END_TABLE)
    return text[:start] + "\n".join([begin, "", *lines, END_TABLE]) + text[end:]


def render_lint(text: str, parser: argparse.ArgumentParser) -> str:
    """docs/lint.md with its option table (from ``lint``'s parser) and key table refreshed."""
    text = _replace_between(text, LINT_OPTIONS, options_table(_subcommands(parser)["lint"]), "docs/lint.md")
    return _replace_between(text, LINT_KEYS, lint_keys_table(), "docs/lint.md")


def cli_parser() -> argparse.ArgumentParser:
    from ckptkeys._cli._main import _parser

    return _parser()


GENERATED: Final[dict[str, Callable[[str], str]]] = {
    "docs/api.md": lambda _old: render_api(),
    "docs/cli.md": lambda old: render_cli(old, cli_parser()),
    "docs/lint.md": lambda old: render_lint(old, cli_parser()),
}


if __name__ == "__main__":
    print("run: " + REFRESH, file=sys.stderr)
    sys.exit(2)
