"""ZeRO-0's fp32 master weights: the fp16/bf16 optimizer wrappers' groups matched to the module's parameters.

Without ZeRO, DeepSpeed 0.19.8 wraps the optimizer of an fp16 run, and of a bf16 run whose
gradients accumulate in bf16 (``DDP_BFLOAT16``), in ``FP16_UnfusedOptimizer`` (any torch
optimizer) or ``FP16_Optimizer`` (``FusedAdam``). Their ``state_dict``, saved as the model
states' ``optimizer``, holds the fp32 master weights, and no parameter names:

- ``fp32_groups``: per param group, one fp32 tensor per parameter, in the group's order;
- ``fp32_groups_flat``: per param group, one flat fp32 tensor, the parameters joined in the
  group's order without padding (``_flatten_dense_tensors``).

Both hold only the parameters the wrapper optimizes (``is_optimized_parameter``: trainable,
with elements), in the order of the param groups given to the optimizer. After every step the
wrapper copies each master into its module parameter (``copy_``, round to nearest even), so the
module's saved value is the master cast to the training dtype, bit for bit. That, with the
shape, matches each master to its parameter: a frozen parameter shaped like a trained one is not
in the groups, and its values tell it apart. Values are compared on a bounded sample (the first
and the last :data:`SAMPLE` elements); a tie the sample cannot break is compared whole, and
refused only when the parameters it could be would export different values.

With MoE, each expert-parallel rank's wrapper state holds the dense masters and its own
experts' (the param groups marked ``moe``): rank 0's in the model states, rank R's in
``expp_rank_R_*_optim_states.pt``; the experts are matched to the expert files' tensors.

(A bf16 pipeline without ZeRO gets ``BF16_Optimizer`` instead, which writes
``bf16_zero_pp_rank_*_optim_states.pt`` shards but no ``param_shapes``: ``plan_zero`` refuses it.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._read._torch import TensorInfo
from ._ranges import cut_range
from ._safetensors import ITEMSIZE
from ._spans import FileSpan
from ._tensor_bytes import span_bytes
from ._types import ExportError, ExportTensor, Planned

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final, Literal, NoReturn

__all__ = ["SAMPLE", "Candidate", "OptimizerState", "has_masters", "match_masters", "module_candidates"]

SAMPLE: Final = 4096
"""Elements compared at each end of a master and its parameter (up to 2 x 4096 x 6 bytes read per
parameter at plan time); a tie is compared whole."""
_FLOATS: Final = frozenset({"float16", "bfloat16", "float32"})


class Candidate:
    """A module parameter a master may belong to: its keys (tied aliases share one tensor), shape,
    dtype and bytes."""

    __slots__ = ("dtype", "keys", "numel", "origin", "shape", "span")

    def __init__(self, key: str, tensor: TensorInfo, span: FileSpan, origin: Literal["trainable", "expert"]) -> None:
        self.keys = [key]
        self.origin = origin
        self.shape = tensor.shape
        self.dtype = tensor.dtype
        self.numel = tensor.numel
        self.span = span


class _Master:
    """One parameter's fp32 master: where it is in the optimizer state, its bytes, and (unfused) its shape."""

    __slots__ = ("label", "pieces", "shape")

    def __init__(self, label: str, pieces: tuple[tuple[FileSpan, int], ...], shape: tuple[int, ...] | None) -> None:
        self.label = label
        self.pieces = pieces
        self.shape = shape


@dataclass(frozen=True, slots=True)
class OptimizerState:
    """One file's saved optimizer wrapper state: the model states' ``optimizer`` or, with MoE, an
    ``expp_rank_*`` file's, of which only the expert groups (``'moe': True``) are taken."""

    path: str
    optimizer: Any
    span: Callable[[Any, str], tuple[FileSpan, int]]
    """The bytes of a tensor of this file and its element count."""
    label: str = ""
    """Put before each master's place in an error: the file, when it is not the model states."""
    experts_only: bool = False


def match_masters(states: Sequence[OptimizerState], candidates: Sequence[Candidate]) -> dict[str, Planned] | None:
    """The fp32 master of every optimized parameter, by key, or ``None`` when the first state holds
    no fp32 groups (fp32 training: the module is the master).

    ``candidates`` are the module's parameters (buffers left out) and the expert files' tensors.
    Raises :class:`ExportError` naming the model states (``states[0].path``) and the tensors when
    a master matches no parameter, or a tie remains that would change the export.
    """
    if not has_masters(states[0].optimizer):
        return None
    path = states[0].path
    matcher = _Matcher(path, candidates)
    for state in states:
        found = _groups_key(state.optimizer)
        if found is None:
            raise ExportError(state.path, "holds no fp32 groups, but the model states' optimizer does")
        key, flat = found
        groups = state.optimizer[key]
        if not isinstance(groups, list):
            raise ExportError(
                state.path, f"optimizer[{key!r}] is {type(groups).__name__}, not the list DeepSpeed writes"
            )
        moe = _check_counts(state.path, state.optimizer, groups, key, flat)
        for g, group in enumerate(groups):
            if state.experts_only and g not in moe:
                continue  # the dense groups again: every expert-parallel rank holds them
            if flat:
                what = f"{state.label}optimizer['fp32_groups_flat'][{g}]"
                _float32(group, state.path, what)
                matcher.cut_flat(what, state.span(group, what))
                continue
            if not isinstance(group, list):
                raise ExportError(state.path, f"optimizer['fp32_groups'][{g}] is {type(group).__name__}, not a list")
            for i, tensor in enumerate(group):
                what = f"{state.label}optimizer['fp32_groups'][{g}][{i}]"
                _float32(tensor, state.path, what)
                matcher.add(what, state.span(tensor, what), tensor.shape)
    matcher.resolve()
    matcher.check_ties()
    masters: dict[str, Planned] = {}
    for candidate, master in matcher.assigned.items():
        spans = cut_range(master.pieces, 0, candidate.numel, 4)
        for name in candidate.keys:
            masters[name] = ExportTensor(name, candidate.shape, "float32", "float32", spans, candidate.origin)
    return masters


def has_masters(optimizer: Any) -> bool:
    """The saved optimizer state is an fp16/bf16 wrapper's, with fp32 groups."""
    return _groups_key(optimizer) is not None


def _groups_key(optimizer: Any) -> tuple[str, bool] | None:
    if isinstance(optimizer, dict):
        if "fp32_groups" in optimizer:
            return "fp32_groups", False
        if "fp32_groups_flat" in optimizer:
            return "fp32_groups_flat", True
    return None


def _check_counts(path: str, optimizer: dict[Any, Any], groups: list[Any], key: str, flat: bool) -> set[int]:
    """The wrapped optimizer's param groups list what the fp32 groups hold: as many groups, and
    per group one parameter per master (one flat parameter per group for ``fp32_groups_flat``).
    Returns the expert groups (``'moe': True``, as DeepSpeed's MoE param groups say)."""
    inner = optimizer.get("optimizer_state_dict")
    param_groups = inner.get("param_groups") if isinstance(inner, dict) else None
    if not isinstance(param_groups, list):
        return set()  # nothing to check against (an optimizer that keeps no param_groups)
    if len(param_groups) != len(groups):
        raise ExportError(
            path, f"optimizer[{key!r}] holds {len(groups)} groups, optimizer_state_dict lists {len(param_groups)}"
        )
    for g, (group, masters) in enumerate(zip(param_groups, groups, strict=True)):
        params = group.get("params") if isinstance(group, dict) else None
        expected = 1 if flat else len(masters) if isinstance(masters, list) else None
        if isinstance(params, list) and expected is not None and len(params) != expected:
            raise ExportError(
                path,
                f"optimizer[{key!r}][{g}] holds {expected} master{'s' if expected != 1 else ''}, "
                f"optimizer_state_dict['param_groups'][{g}] lists {len(params)} parameters",
            )
    return {g for g, group in enumerate(param_groups) if isinstance(group, dict) and group.get("moe") is True}


def _float32(tensor: Any, path: str, what: str) -> None:
    if not isinstance(tensor, TensorInfo) or tensor.dtype != "float32":
        found = tensor.dtype if isinstance(tensor, TensorInfo) else type(tensor).__name__
        raise ExportError(path, f"{what} is {found}, not the float32 master DeepSpeed writes")


class _Matcher:
    """Masters assigned to candidates by shape and value (the bytes read once, on demand)."""

    def __init__(self, path: str, candidates: Sequence[Candidate]) -> None:
        self.path = path
        self.candidates = [c for c in candidates if c.dtype in _FLOATS and c.numel > 0]
        self.assigned: dict[Candidate, _Master] = {}
        self.options: list[tuple[_Master, list[Candidate]]] = []
        self.ties: list[list[Candidate]] = []
        self._bytes: dict[tuple[FileSpan, ...], bytes] = {}
        self._index: dict[tuple[int, str], dict[bytes, list[Candidate]]] | None = None

    # -- bytes -------------------------------------------------------------------------------

    def _read(self, spans: tuple[FileSpan, ...], itemsize: int) -> bytes:
        found = self._bytes.get(spans)
        if found is None:
            found = self._bytes[spans] = span_bytes(spans, itemsize)
        return found

    def _ends(self, pieces: Sequence[tuple[FileSpan, int]], itemsize: int, numel: int, whole: bool) -> bytes:
        """Elements ``[0, numel)`` of the joined pieces, or only the first and last SAMPLE of them."""
        if whole or numel <= 2 * SAMPLE:
            return self._read(cut_range(pieces, 0, numel, itemsize), itemsize)
        head = self._read(cut_range(pieces, 0, SAMPLE, itemsize), itemsize)
        return head + self._read(cut_range(pieces, numel - SAMPLE, SAMPLE, itemsize), itemsize)

    def _cast(self, master: _Master, numel: int, dtype: str, whole: bool) -> bytes:
        """The master's first ``numel`` elements (both ends, or whole) cast to ``dtype``."""
        from ._cast import INSTALL_NUMPY, NumpyMissingError, cast_bytes

        try:
            return bytes(cast_bytes(self._ends(master.pieces, 4, numel, whole), "float32", dtype))
        except ImportError:  # plan_export adds the ways out that need no numpy
            raise NumpyMissingError(
                self.path,
                f"holds fp32 master weights without parameter names ({master.label}); they are matched to the "
                f"module's parameters by value: that needs numpy, which is not installed: {INSTALL_NUMPY}",
            ) from None

    def _equal(self, master: _Master, candidate: Candidate, whole: bool = False) -> bool:
        """The master, cast to the parameter's dtype, equals the parameter's bytes (at both ends, or whole)."""
        numel = candidate.numel
        theirs = self._ends(((candidate.span, numel),), ITEMSIZE[candidate.dtype], numel, whole)
        return self._cast(master, numel, candidate.dtype, whole) == theirs

    def _matching(self, master: _Master, limit: int, exact: bool = False) -> list[Candidate]:
        """The candidates of at most ``limit`` elements (``exact``: of ``limit``) whose sampled bytes
        equal the master's first elements cast, in the module's order: one cast and one look-up per size and dtype, so a
        model of many same-shaped parameters costs no comparison of every pair."""
        if self._index is None:
            self._index = {}
            for candidate in self.candidates:
                numel, dtype = candidate.numel, candidate.dtype
                sample = self._ends(((candidate.span, numel),), ITEMSIZE[dtype], numel, False)
                self._index.setdefault((numel, dtype), {}).setdefault(sample, []).append(candidate)
        found: list[Candidate] = []
        for (numel, dtype), by_sample in self._index.items():
            if numel == limit or (numel < limit and not exact):
                found += by_sample.get(self._cast(master, numel, dtype, False), [])
        order = {c: i for i, c in enumerate(self.candidates)}
        return sorted(found, key=order.__getitem__)

    def _upcast(self, master: _Master, candidate: Candidate) -> bool:
        """The whole master is the parameter's value exactly (so exporting either writes the same bytes)."""
        from ._cast import cast_bytes

        numel = candidate.numel
        module = self._ends(((candidate.span, numel),), ITEMSIZE[candidate.dtype], numel, True)
        return bytes(cast_bytes(module, candidate.dtype, "float32")) == self._ends(master.pieces, 4, numel, True)

    # -- matching ----------------------------------------------------------------------------

    def add(self, label: str, found: tuple[FileSpan, int], shape: tuple[int, ...]) -> None:
        """A master of known shape (``fp32_groups``): every parameter of its shape and value."""
        master = _Master(label, (found,), shape)
        matching = [c for c in self._matching(master, math.prod(shape), exact=True) if c.shape == shape]
        if not matching:
            self._no_match(master, [c for c in self.candidates if c.shape == shape], f"shape {shape}")
        self.options.append((master, matching))

    def resolve(self) -> None:
        """Masters with one free parameter left take it, until none is left; a tie that remains is
        settled only if every way of settling it exports the same values."""
        pending = list(self.options)
        while pending:
            free = [(m, [c for c in cs if c not in self.assigned]) for m, cs in pending]
            for (master, left), (_, options) in zip(free, pending, strict=True):
                if not left:
                    taken = ", ".join(f"{c.keys[0]!r} ({self.assigned[c].label})" for c in options)
                    raise ExportError(self.path, f"{master.label} matches only parameters other masters match: {taken}")
            single = [(m, left[0]) for m, left in free if len(left) == 1]
            if single:
                for master, candidate in single:
                    if candidate in self.assigned:
                        raise ExportError(
                            self.path,
                            f"{master.label} and {self.assigned[candidate].label} both match only "
                            f"{candidate.keys[0]!r}: not this module's masters",
                        )
                    self.assigned[candidate] = master
            else:
                master, left = free[0]
                self.assigned[self._settle(master, left)] = master
            pending = [(m, cs) for m, cs in pending if m not in self.assigned.values()]

    def _settle(self, master: _Master, tied: list[Candidate]) -> Candidate:
        """A master that equals several parameters cast (on the sample): compared whole, one of them
        may be left; else the tie is harmless only if they hold the same values and the master is
        exactly those values (any choice then writes the same bytes): the first in the module's
        order is taken, and :meth:`check_ties` makes sure no other master could take it instead."""
        whole = [c for c in tied if self._equal(master, c, whole=True)]
        if not whole:
            self._no_match(master, tied, f"shape {tied[0].shape}")
        if len(whole) == 1:
            return whole[0]
        if not all(self._upcast(master, c) for c in whole):
            self._ambiguous(master, whole)
        self.ties.append(whole)
        return whole[0]

    def check_ties(self) -> None:
        """Every master that equals a parameter of a harmless tie, cast, must be that parameter's
        value exactly too; else another assignment would write other bytes."""
        for tie in self.ties:
            for master in self.assigned.values():
                for candidate in tie:
                    if (
                        master.shape == candidate.shape
                        and self._equal(master, candidate, whole=True)
                        and not self._upcast(master, candidate)
                    ):
                        self._ambiguous(master, tie)

    def _ambiguous(self, master: _Master, tied: list[Candidate]) -> NoReturn:
        names = ", ".join(repr(c.keys[0]) for c in tied)
        raise ExportError(
            self.path,
            f"{master.label} equals each of {names} cast to the training dtype, and they would export different "
            "values: which parameter it is cannot be told (ambiguous): not exported",
        )

    def cut_flat(self, label: str, flat: tuple[FileSpan, int]) -> None:
        """A flat group (``fp32_groups_flat``): cut, from its start, into the free parameters whose
        values come next; the group must end where the last one ends."""
        span, total = flat
        offset = 0
        while offset < total:
            here = tuple((s, s.length // 4) for s in cut_range(((span, total),), offset, total - offset, 4))
            matching = {
                c: _Master(f"{label}[{offset}:{offset + c.numel}]", here, c.shape)
                for c in self._matching(_Master(label, here, None), total - offset)
                if c not in self.assigned
            }
            if not matching:
                self._no_match(_Master(f"{label} from element {offset}", here, None), [], f"{total - offset} elements")
            first, master = next(iter(matching.items()))
            if len(matching) > 1:
                if len({c.numel for c in matching}) > 1:
                    names = ", ".join(repr(c.keys[0]) for c in matching)
                    raise ExportError(
                        self.path,
                        f"{label} from element {offset} equals each of {names} cast to the training dtype: where "
                        "the next parameter ends cannot be told (ambiguous): not exported",
                    )
                first = self._settle(master, list(matching))
                master = matching[first]
            self.assigned[first] = master
            offset += first.numel

    def _no_match(self, master: _Master, shaped: list[Candidate], what: str) -> NoReturn:
        if shaped:
            names = ", ".join(repr(c.keys[0]) for c in shaped)
            reason = f"differs from every module parameter of its {what} ({names}) cast to their dtype"
        else:
            reason = f"matches no free module parameter of its {what}"
        raise ExportError(self.path, f"{master.label} {reason}: not this module's fp32 masters")


def module_candidates(
    module: dict[Any, Any],
    buffers: set[Any],
    span: Callable[[Any, str], tuple[FileSpan, int]],
    origin: Literal["trainable", "expert"] = "trainable",
) -> list[Candidate]:
    """The module's entries that are not buffers, tied aliases (one tensor, several keys) as one;
    ``origin`` is what a master found for one is (``"expert"`` for an expert file's tensors)."""
    by_place: dict[tuple[FileSpan, tuple[int, ...]], Candidate] = {}
    for key, tensor in module.items():
        if key in buffers or not isinstance(tensor, TensorInfo):
            continue
        found, _ = span(tensor, f"module[{key!r}]")
        place = (found, tensor.shape)
        if place in by_place:
            by_place[place].keys.append(key)
        else:
            by_place[place] = Candidate(key, tensor, found, origin)
    return list(by_place.values())
