"""The text form of the report ``_report.build_report`` builds: what ``inspect`` and ``validate`` print."""

from __future__ import annotations

import re
from collections import OrderedDict

from .._check import _converters, _frameworks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

__all__ = ["render_text", "shown"]

# What a string taken from a file (a tensor's name, a key, metadata, a shard's name) must not put on
# a terminal raw: line breaks that would forge report lines (C0, DEL, C1, U+2028/9) and escapes or
# direction overrides that would rewrite what is shown (ESC is C0; U+200E/F, U+202A-E, U+2066-9).
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """``text`` with every control character escaped as Python writes it (``\\n``, ``\\x1b``,
    ``\\u202e``): one line, and nothing the terminal acts on. The JSON keeps the exact strings."""
    return _UNSAFE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def _escaped(value: Any) -> Any:
    """The document with every string in it (keys too) :func:`shown`."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


_COLORS: Final = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}


_KINDS: Final = {"save": "save folder", "tag": "tag folder", "file": "file", "run": "run", "weights": "weights folder"}
_READINESS: Final = (*_converters.NOT_READY.values(), _converters.SAFETENSORS_NOT_READY)


def _pointing(problem: dict[str, Any]) -> dict[str, Any]:
    """A converter-readiness problem whose reason is under "converters" above: its first clause only."""
    return {**problem, "message": problem["message"].partition(": ")[0] + " (why and what to do: converters, above)"}


def render_text(document: dict[str, Any], *, color: bool, validate_only: bool) -> str:
    """The report as text: a summary per tag, files, key trees, globals, converters, problems.

    A run lists its saves, newest first, then each reported save in full. Every string is
    :func:`shown` escaped first: a name holding a line break or an escape cannot forge lines.
    """
    document = _escaped(document)
    paint = (lambda s, sev: f"{_COLORS[sev]}{s}\033[0m") if color else (lambda s, sev: s)
    if document["kind"] != "run":
        return "\n".join(_folder_text(document, paint, validate_only) + _hidden(document)) + "\n"
    framework = f", written by {_frameworks.NAMES[document['framework']]}" if document["framework"] else ""
    out = [f"{document['path']} (run of {len(document['saves'])} saves{framework}, newest first)"]
    width = max(len(s["name"]) for s in document["saves"])
    for save in document["saves"]:
        step = f"step {save['step']}" if save["step"] is not None else "step ?"
        shown = "  (reported below)" if save["report"] is not None else ""
        out.append(f"  {save['name']:<{width}}  {step}{shown}")
    if document["framework_files"]:
        out.append(f"framework files: {', '.join(document['framework_files'])}")
    if document["problems"]:  # the run folder's own (a trainer_state.json not read, entries skipped)
        out += _problems_text({"problems": document["problems"], "tags": []}, paint)
    for save in document["saves"]:
        if save["report"] is not None:
            out.append("")
            out += _folder_text(save["report"], paint, validate_only)
    if len(document["saves"]) > 1 and sum(s["report"] is not None for s in document["saves"]) == 1:
        out += ["", "(--all reports every save, --save NAME one of them)"]
    return "\n".join(out + _hidden(document)) + "\n"


def _hidden(document: dict[str, Any]) -> list[str]:
    """How many problems the selection hides (--select, --ignore or the config's), if any."""
    hidden = document["summary"]["hidden"]
    if not hidden:
        return []
    problems = f"{hidden} problem{'s' if hidden != 1 else ''}"
    return ["", f"({problems} hidden by the selection: --select, --ignore or pyproject.toml)"]


def _folder_text(document: dict[str, Any], paint: Callable[[str, str], str], validate_only: bool) -> list[str]:
    out: list[str] = [f"{document['path']} ({_KINDS[document['kind']]})"]
    if document["framework"] is not None:
        out.append(f"written by: {_frameworks.NAMES[document['framework']]}")
    if document["framework_files"]:
        out.append(f"framework files: {', '.join(document['framework_files'])}")
    if document["latest"] is not None:
        out.append(f"latest: {document['latest']}")
    if document["latest_universal"] is not None:
        out.append(f"latest_universal: {document['latest_universal']}")
    for tag in document["tags"]:
        out.append("")
        out += _tag_text(tag, validate_only)
    for index in (document.get("weights") or {}).get("indexes", ()):
        total = f"{index['total_size']:,} bytes" if index["total_size"] is not None else "not given"
        out.append(
            f"Index {index['name']}: {index['tensors']} tensors in {len(index['shards'])} shards, total_size {total}"
        )
        others = {k: v for k, v in (index["metadata"] or {}).items() if k != "total_size"}
        if others:
            out.append("  metadata: " + ", ".join(f"{k}={v!r:.60}" for k, v in others.items()))
    for entry in document.get("files", ()):
        out.append("")
        out += _file_lines(entry)
        if not validate_only:
            lines = document.get("_trees", {}).get(entry["relpath"])
            if lines is not None:
                out.append("  keys:")
                out += ["    " + line for line in lines]
            out += _globals_text([entry])
    out.append("")
    out += _problems_text(document, paint, converters_shown=not validate_only)
    return out


def _tag_text(tag: dict[str, Any], validate_only: bool) -> list[str]:
    facts = []
    if tag["universal"]:
        facts.append("universal")
    facts.append(f"ZeRO-{tag['zero_stage']}" if tag["zero_stage"] is not None else "ZeRO stage ?")
    facts.append(tag["precision"] or "precision ?")
    degrees = " ".join(
        f"{k}={tag[f'{k}_world_size'] if tag[f'{k}_world_size'] is not None else '?'}" for k in ("dp", "mp", "pp", "tp")
    )
    out = [f"Tag {tag['name']}: {', '.join(facts)}, {degrees}"]
    if validate_only:
        return out
    moe = tag["moe"]
    if moe is not None:
        out.append(
            f"  MoE: {moe['num_experts']} experts (per layer {moe['num_experts_per_layer']}), "
            f"ep_size={moe['ep_size'] if moe['ep_size'] is not None else '?'}, {moe['expert_files']} expert files"
        )
    if tag["parameters"] is not None:
        out.append(f"  parameters: {tag['parameters']:,}")
    if tag["tensors"]:
        parts = [f"{dtype} {_size(t['bytes'])} ({t['count']} tensors)" for dtype, t in tag["tensors"].items()]
        out.append(f"  tensor bytes: {', '.join(parts)}")
    out.append(f"  files: {len(tag['files'])}, {_size(tag['size'])}")
    for entry in tag["files"]:
        out.append("    " + _file_summary(entry))
    for relpath, lines in tag["_trees"].items():
        out.append(f"  keys of {relpath}:")
        out += ["    " + line for line in lines]
    out += _globals_text(tag["files"])
    out.append("  converters:")
    for name, verdict in tag["converters"].items():
        out.append(f"    {name:<16} {_verdict_text(verdict)}")
        safe = verdict["safe_serialization"]
        if safe is not None:
            out.append(f"    {'':<16} --safe_serialization: {_verdict_text(safe)}")
    return out


def _verdict_text(verdict: dict[str, Any]) -> str:
    if verdict["ready"]:
        return "ready"
    if not verdict["applicable"]:
        return f"not applicable ({verdict['code']}): {verdict['reason']}"
    return f"not ready ({verdict['code']}): {verdict['reason']}"


def _file_summary(entry: dict[str, Any]) -> str:
    ranks = " ".join(
        f"{label} {entry[key]}"
        for key, label in (
            ("dp_rank", "dp"),
            ("mp_rank", "mp"),
            ("layer", "layer"),
            ("expert", "expert"),
            ("ep_rank", "ep"),
        )
        if entry.get(key) is not None
    )
    unreadable = "" if entry.get("readable", True) else "  UNREADABLE"
    return f"{entry['relpath']:<52} {_size(entry['size']):>9}  {entry['kind']} {ranks}{unreadable}"


def _file_lines(entry: dict[str, Any]) -> list[str]:
    what = entry["kind"] or ("safetensors" if entry.get("format") == "safetensors" else "not a DeepSpeed file name")
    out = [f"File {entry['relpath']}: {what}, {_size(entry['size'])}"]
    for dtype, t in (entry.get("tensors") or {}).items():
        out.append(f"  {dtype}: {t['count']} tensors, {t['numel']:,} elements, {_size(t['bytes'])}")
    if entry.get("format") == "safetensors":
        tensors = entry["tensors"].values()
        out.append(
            f"  total: {sum(t['count'] for t in tensors)} tensors, {sum(t['numel'] for t in tensors):,} elements, "
            f"{_size(sum(t['bytes'] for t in tensors))}; header {_size(entry['safetensors']['header_size'])}"
        )
    return out


def _globals_text(files: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, dict[str, Any]] = OrderedDict()
    for entry in files:
        for ref in entry.get("globals") or ():
            seen.setdefault(ref["name"], ref)

    def shown(ref: dict[str, Any]) -> str:
        return f"    {ref['name']}" + (f" (written {ref['written']})" if ref.get("written") else "")

    out = []
    dangerous = [ref for ref in seen.values() if ref["class"] == "code-execution"]
    refused = [name for name, ref in seen.items() if ref["class"] == "refused"]
    if dangerous:
        out.append(
            "  CODE EXECUTION: the pickle names globals that run code when torch.load(weights_only=False) loads it:"
        )
        out += [shown(ref) for ref in dangerous]
    if refused:
        out.append(
            "  globals torch.load(weights_only=True) refuses (with weights_only=False they are imported and called, "
            "which can run arbitrary code):"
        )
        out += [shown(seen[name]) for name in refused]
        out.append("  allow them, if you trust the file, with:")
        for name in refused:
            module, _, attr = name.rpartition(".")
            out.append(f"    from {module} import {attr}")
        out.append(f"    torch.serialization.add_safe_globals([{', '.join(n.rpartition('.')[2] for n in refused)}])")
    return out


def _problems_text(
    document: dict[str, Any], paint: Callable[[str, str], str], *, converters_shown: bool = False
) -> list[str]:
    """The problems by severity. Where the tags' converters were shown (inspect), a readiness
    problem points there instead of repeating the reason."""
    problems = document["problems"] + [
        _pointing(p) if converters_shown and p["code"] in _READINESS else p
        for t in document["tags"]
        for p in t["problems"]
    ]
    if not problems:
        return ["problems: none"]
    out = []
    for severity in ("error", "warning", "info"):
        group = [p for p in problems if p["severity"] == severity]
        if not group:
            continue
        out.append(paint(f"{severity}s ({len(group)}):", severity))
        for p in group:
            where = p["file"] or ""
            if p["key_path"]:
                where += f" [{p['key_path']}]"
            out.append(f"  {p['code']}: {where}: {p['message']}")
    return out
