"""The evidence rules: DeepSpeed's checkpoint vocabulary and how to recognise it in code.

The registry indexed by value (:func:`registry_index`), the words other code uses too (``_COMMON``), the
keys of other formats, the names of mappings, calls and files that show code is about DeepSpeed
checkpoints, and the recognisers of checkpoint file names built or written by hand; then the
weighing of a key candidate (:class:`Candidate`): why a common word is a DeepSpeed key where it
stands, and which registry members it is, most likely first.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .._keys import _registry
from .._keys._strenum import KeyGroup
from ..naming import CheckpointName, FileKind, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# Registry values that other code also uses as keys of its own (a DeepSpeed *config*, an
# optimizer's state, Megatron's arguments, a log dict): reported only with evidence that the
# code around them is about DeepSpeed checkpoints. Every value without `_`, `.` or `-` is one too.
_COMMON: Final = frozenset(
    {
        "lr_scheduler",
        "param_groups",
        "exp_avg",
        "exp_avg_sq",
        "zero_stage",
        "global_steps",
        "global_samples",
        "skipped_steps",
        "dp_world_size",
        "mp_world_size",
        "num_experts",
        "num_local_experts",
        "ep_size",
        "ep_rank",
        "tp_size",
        "tp_rank",
        "etp_size",
        "etp_rank",
        "pp_degree",
        "tp_degree",
        "padded_vocab_size",
        "original_vocab_size",
        "clip_grad",
        "cur_scale",
        "cur_iter",
        "scale_factor",
        "scale_window",
        "min_scale",
        "delayed_shift",
        "loss_scaler",
        "dynamic_loss_scale",
        "data_sampler",
        "random_ltd",
        "module_path",
        "cat_dim",
        "partition_dim",
        "partition_count",
        "checkpoint_format",
        "moe_layer_id",
        "shared_params",
        "logical_shape",
        "local_experts",
        "expert_placement",
    }
)
_SEPARATOR: Final = re.compile(r"[_.\-]")
# Pieces of a string that names a DeepSpeed checkpoint file: evidence for the keys beside it.
DS_FILE_TEXT: Final = re.compile(r"model_states|optim_states|zero_pp_rank_|expp_rank_")
# A DeepSpeed file name's ending: a string that ends so and starts with a placeholder is its tail.
_DS_TAIL: Final = re.compile(r"(?:_model_states|-model_states|_optim_states|optim_states)\.pt$")
# A DeepSpeed file name's beginning: a string that starts so and goes on with a placeholder is its head.
_DS_HEAD: Final = re.compile(r"(?:bf16_|fp16_)?zero_pp_rank_\0|expp_rank_\0")
# Functions (DeepSpeed's own, and ckptkeys.naming) that return a DeepSpeed checkpoint file name.
DS_NAME_FUNCTIONS: Final = frozenset(
    {
        "get_model_state_file",
        "get_model_state_files",
        "get_optim_files",
        "get_checkpoint_files",
        "get_zero_ckpt_name_for_rank",
        "get_model_ckpt_name_for_rank",
        "get_layer_ckpt_name_for_rank",
        "_get_ckpt_name",
        "_get_zero_ckpt_name",
        "_get_optimizer_ckpt_name",
        "_get_expert_ckpt_name",
        "_get_layer_ckpt_name",
        "model_states",
        "zero3_model_states",
        "optim_states",
        "layer_model_states",
        "expert_model_states",
        "expert_optim_states",
    }
)
# Names of mappings that hold a DeepSpeed checkpoint (evidence) and of those that do not.
_DS_NAME: Final = re.compile(
    r"model_states(?!_?dict)|optim_states(?!_?dict)|deepspeed|(?:^|[^a-z])ds_(?:checkpoint|ckpt|sd|state)"
    r"|zero_(?:checkpoint|ckpt|sd)",
    re.IGNORECASE,
)
OTHER_NAME: Final = re.compile(
    r"config|cfg|(?:^|[^a-z])conf(?:[^a-z]|$)|kwargs|(?:^|[^a-z])args(?:[^a-z]|$)|(?:^|[^a-z])logs?(?:[^a-z]|$)"
    r"|log_dict|metric|stats|hparams|wandb|tensorboard",
    re.IGNORECASE,
)
# Keys of other formats that share DeepSpeed's words, never written by DeepSpeed: Megatron's own
# checkpoint ("model", "opt_param_scheduler") and Megatron's FP16_Optimizer state, whose other
# keys ("optimizer_state_dict", "loss_scaler", "overflow") DeepSpeed's optimizers inherited.
OTHER_FORMAT_KEYS: Final = frozenset({"model", "opt_param_scheduler", "first_closure_call_this_step", "fp32_from_fp16"})
# Pieces specific enough that a built string holding one may be a checkpoint file name.
_FILE_NAME_PIECE: Final = re.compile(r"mp_rank_|zero_pp_rank_|expp_rank_|[_-]optim_states|[_-]model_states|states\.pt")
# (str.__str__: the plain value, typed str on every Python version mypy checks)
TAG_PREFIX: Final = str.__str__(_registry.NamingKeys.DEFAULT_TAG_PREFIX)
LATEST_FILE: Final = str.__str__(_registry.NamingKeys.LATEST)
LATEST_NAMES: Final = frozenset({LATEST_FILE, str.__str__(_registry.NamingKeys.LATEST_UNIVERSAL)})
# Calls whose string argument parses or matches a name: str methods, globbing, regular expressions.
PARSING_CALLS: Final = frozenset(
    {
        "replace",
        "startswith",
        "endswith",
        "split",
        "rsplit",
        "partition",
        "rpartition",
        "removeprefix",
        "lstrip",
        "strip",
        "find",
        "rfind",
        "index",
        "glob",
        "rglob",
        "iglob",
        "fnmatch",
        "match",
        "fullmatch",
        "search",
        "compile",
        "sub",
        "findall",
    }
)
# Calls whose string argument is a path.
PATH_CALLS: Final = frozenset({"join", "Path", "PurePath", "open", "exists", "isfile", "isdir", "remove", "unlink"})
# DeepSpeed's module of key constants, and what a constant's name looks like.
CONSTANTS_MODULE: Final = "deepspeed.checkpoint.constants"
CONSTANT_NAME: Final = re.compile(r"[A-Z][A-Z0-9_]*")


# -- the registry, indexed by value ------------------------------------------------------------


class _Index:
    """Registry values, their members in registry order, and the pre-filters built from them."""

    def __init__(self) -> None:
        from .. import constants

        members: dict[str, list[KeyGroup]] = {}
        for group in _registry.GROUPS:
            for member in group:
                members.setdefault(member.value, []).append(member)
        self.members = members
        self.group_of_value = {value: {type(m).__name__ for m in found} for value, found in members.items()}
        # Values that are only file-name pieces ("global_step", "latest", "mp_rank_"): never keys.
        self.naming_only = {value for value, groups in self.group_of_value.items() if groups == {"NamingKeys"}}
        naming = sorted(_registry.NamingKeys, key=lambda m: -len(m.value))
        self.naming = [(str.__str__(m), f"NamingKeys.{m.name}") for m in naming]
        # DeepSpeed's constant names and their values (deepspeed.checkpoint.constants)
        self.constant_names = frozenset(constants.__all__)
        self.constants: dict[str, str] = {
            name: getattr(constants, name) for name in constants.__all__ if type(getattr(constants, name)) is str
        }
        quoted = "|".join(re.escape(v) for v in sorted(members, key=len, reverse=True))
        # A file is only walked if one of these appears in its text at all.
        self.prefilter = re.compile(
            rf"""['"](?:{quoted})['"]|{_FILE_NAME_PIECE.pattern}|{TAG_PREFIX}|deepspeed\.checkpoint"""
            r"""|from\s+\.+\s*constants\s+import|['"]latest"""
        )

    def common(self, value: str) -> bool:
        return value in _COMMON or not _SEPARATOR.search(value)


_INDEX: _Index | None = None


def registry_index() -> _Index:
    global _INDEX
    if _INDEX is None:
        _INDEX = _Index()
    return _INDEX


# -- strings: literals, strings built from parts, file names -----------------------------------


def key_literal(node: ast.AST | None) -> ast.Constant | None:
    if isinstance(node, ast.Constant) and type(node.value) is str:
        return node
    return None


def built_template(node: ast.AST) -> str | None:
    """The text of a string built from parts, ``\\0`` for each placeholder (``None``: not one)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "\0" for v in node.values
        )
        return re.sub(r"\{[^{}]*\}", "\0", text)  # doubled braces: a template filled in later
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts: list[ast.AST] = []
        stack: list[ast.AST] = [node]
        while stack:  # flatten a + b + c
            item = stack.pop()
            if isinstance(item, ast.BinOp) and isinstance(item.op, ast.Add):
                stack += [item.right, item.left]
            else:
                parts.append(item)
        texts = [built_template(p) if isinstance(p, (ast.Constant, ast.JoinedStr)) else None for p in parts]
        if all(t is None for t in texts):
            return None
        return "".join("\0" if t is None else t for t in texts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and key_literal(node.left):
        return re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdifxXr]", "\0", node.left.value)  # type: ignore[attr-defined]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and key_literal(node.func.value)
    ):
        return re.sub(r"\{[^{}]*\}", "\0", node.func.value.value)  # type: ignore[attr-defined]
    return None


BUILDERS: Final = (  # (pieces that must all appear, the naming function to suggest)
    (("expp_rank_",), "expert_optim_states(ep_rank, mp_rank)"),
    (("expert_", "model_states"), "expert_model_states(expert, mp_rank, layer)"),
    (("layer_", "-model_states"), "layer_model_states(layer, mp_rank)"),
    (("-model_", "-model_states"), "layer_model_states(layer, mp_rank)"),
    (("zero_pp_rank_", "optim_states"), "optim_states(dp_rank, mp_rank, precision)"),
    (("zero_pp_rank_", "model_states"), "zero3_model_states(dp_rank, mp_rank)"),
    (("mp_rank_", "model_states"), "model_states(mp_rank)"),
)


def naming_members(text: str) -> list[str]:
    """NamingKeys members whose values appear in ``text``, longest first, none inside another."""
    found: list[tuple[str, str]] = []
    for value, name in registry_index().naming:
        if value in text and not any(value in longer for longer, _ in found) and len(value) > 3:
            found.append((value, name))
    return [name for _, name in found]


def is_ds_file_name(template: str) -> bool:
    """Whether a built string's text (``\\0`` for placeholders) is a DeepSpeed file name or its tail."""
    base = template.replace("\\", "/").rsplit("/", 1)[-1]
    if "\0" not in base or any(c.isspace() for c in base):
        return False
    base = base.replace("*", "\0")  # a glob pattern
    if parse(base.replace("\0", "0")) is not None:
        return True
    rest = base.lstrip("\0")  # what follows a leading placeholder (a prefix, a path)
    if parse(rest.replace("\0", "0")) is not None or _DS_HEAD.match(rest):
        return True
    # a tail: "{prefix}_mp_rank_{mp}_model_states.pt", "-model_{mp:02}-model_states.pt"
    return (rest != base or rest[:1] in "_-") and bool(_DS_TAIL.search(rest)) and "\0" in rest


def call_for(record: CheckpointName) -> str | None:
    kind, mp = record.kind, record.mp_rank
    if kind is FileKind.MODEL_STATES:
        return f"model_states({mp})"
    if kind is FileKind.ZERO3_MODEL_STATES:
        return f"zero3_model_states({record.dp_rank}, {mp})"
    if kind is FileKind.OPTIM_STATES:
        precision = f", {record.precision!r}" if record.precision else ""
        return f"optim_states({record.dp_rank}, {mp}{precision})"
    if kind is FileKind.LAYER_MODEL_STATES:
        return f"layer_model_states({record.layer}{'' if mp is None else f', {mp}'})"
    if kind is FileKind.EXPERT_MODEL_STATES:
        return f"expert_model_states({record.expert}, {mp}{'' if record.layer is None else f', {record.layer}'})"
    if kind is FileKind.EXPERT_OPTIM_STATES:
        return f"expert_optim_states({record.ep_rank}, {mp})"
    return None


# -- weighing a key candidate ------------------------------------------------------------------


@dataclass(slots=True)
class Candidate:
    """A registry-valued literal in a key position (or a collection), before the context is known."""

    node: ast.Constant
    value: str
    code: str
    store: bool  # the key would be stored in the mapping: the fix writes ``Member.value``
    scope: ast.AST  # the innermost function, or the module
    holder: str  # the source of the mapping (or the name the dict/collection is assigned to)
    group: ast.AST | None = None  # the dict display or collection it is one key of
    expression: ast.AST | None = None  # the mapping looked up (a key position's), for where it came from


def common_word_evidence(
    candidate: Candidate,
    distinctive: dict[int, str],
    by_group: dict[int, list[Candidate]],
    file_evidence: dict[int, str],
    module: ast.AST,
) -> str:
    """Why a common word (``module``, ``optimizer``, ``step``) is a DeepSpeed key here; "" if nothing shows it.

    ``distinctive``: scope id -> a distinctive key used there; ``by_group``: display or collection
    id -> its kept candidates; ``file_evidence``: scope id -> why its code is about DeepSpeed
    checkpoint files; ``module``: the module's tree (the scope of its top level).
    """
    value = candidate.value
    index = registry_index()
    if candidate.group is not None:
        for other in by_group.get(id(candidate.group), []):
            if not index.common(other.value):
                return f"a common word, beside the DeepSpeed key {other.value!r} in the same display"
    where = "function" if candidate.scope is not module else "module's top level"
    other_key = distinctive.get(id(candidate.scope))
    if other_key is not None and other_key != value:
        return f"a common word, in a {where} that also uses the DeepSpeed key {other_key!r}"
    why = file_evidence.get(id(candidate.scope))
    if why:
        return f"a common word, in a {where} that {why}"
    name = _DS_NAME.search(candidate.holder)
    if name is not None:
        return f"a common word, in a mapping named {candidate.holder!r}"
    return ""


def ranked_members(value: str, around: list[str]) -> tuple[tuple[str, ...], bool]:
    """The registry members with ``value``, most likely first (``"OptimizerKeys.ZERO_STAGE"``), and
    whether the first is unambiguous, judged by ``around``: the other keys of the same scope."""
    index = registry_index()
    found = index.members[value]
    # Rank the members by how many other keys of the same scope their group holds.
    score = {type(m).__name__: sum(1 for v in around if type(m).__name__ in index.group_of_value[v]) for m in found}
    ranked = sorted(found, key=lambda m: -score[type(m).__name__])
    names = tuple(f"{type(m).__name__}.{m.name}" for m in ranked)
    best = score[type(ranked[0]).__name__]
    unambiguous = len(ranked) == 1 or best > score[type(ranked[1]).__name__]
    return names, unambiguous
