"""``plan_universal()``: the tag chosen as export chooses it, what ``ds_to_universal`` refuses
refused, the ZeRO stage read as it reads it, and the layout handed to its planner.

``ds_to_universal`` 0.19.8 (``deepspeed/checkpoint/ds_to_universal.py``, ``main``) globs the
tag's ``*_optim_states.pt`` (none: ``FileNotFoundError``, so ZeRO-0 is never converted), reads
the ZeRO stage from the first of them in natural order (``zero_stage`` of its
``optimizer_state_dict``, 1 where absent, as the BF16 optimizer writes none; ZeRO-3's own files,
``zero_pp_rank_*`` and ``bf16_zero_pp_rank_*``, first where there are any), then converts
stages 1 and 2 one way (``_zero12``) and stage 3 another (``_zero3``).
"""

from __future__ import annotations

import os
import re

from .._check._layout import scan
from .._export._entry import _tag_layout
from .._export._plan import Source, _stage
from .._export._refuse import refuse_incomplete
from .._export._types import ExportError
from .._read._source import is_url
from ..naming import FileKind
from ._types import LATEST_UNIVERSAL, UNIVERSAL_SUFFIX, UniversalPlan
from ._zero3 import plan_zero3
from ._zero12 import plan_zero12

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._check._layout import LayoutFile
    from ._types import NotRestored, UniversalFile

__all__ = ["natural_order", "plan_universal"]

# ds_to_universal's _filter_zero3_optim_files: the optimizer files ZeRO-3 writes (no fp16_ prefix).
_ZERO3_OPTIM = re.compile(r"(?:bf16_)?zero_pp_rank_")


def plan_universal(
    path: str | os.PathLike[str],
    *,
    tag: str | None = None,
    output_folder: str | os.PathLike[str] | None = None,
    inject_missing_state: bool = False,
    strict: bool = True,
) -> UniversalPlan:
    """The plan to convert the checkpoint at ``path`` (a run, save or tag folder, as
    :func:`~ckptkeys.plan_export` takes it) to DeepSpeed's universal format, as
    ``ds_to_universal`` 0.19.8 converts it: the same files, each holding the same objects.

    ``tag`` picks a tag of a save folder (default: the one ``latest`` names). The universal tag
    is ``output_folder`` (default ``<save>/<tag>_universal``, beside the source tag), and
    ``latest_universal`` is written into the folder that holds it, as ``ds_to_universal`` writes
    it. ``inject_missing_state`` and ``strict`` are ``ds_to_universal``'s
    ``--inject_missing_state`` and ``--no_strict``: the first converts a ZeRO-1/2 checkpoint
    saved without ``universal_checkpoint_info`` (Hugging Face Trainer, Accelerate and Lightning
    saves) as if it said nothing but its version; the second lets tensor-parallel merge
    patterns that match no parameter pass. The plan comes from the pickles alone: no tensor
    byte is read. Raises :class:`~ckptkeys.ExportError` naming the file and the reason where
    the checkpoint is incomplete (as :func:`~ckptkeys.plan_export` refuses it) or where
    ``ds_to_universal`` refuses or fails, or :class:`~ckptkeys.ReadError`.
    """
    where = os.fspath(path)
    if not is_url(where):  # "tag/" (a shell's completion), "." and ".." name the tag as its name does
        where = os.path.normpath(where)
        if os.path.basename(where) in (os.curdir, os.pardir, ""):
            where = os.path.abspath(where)
    if is_url(where):
        raise ExportError(where, "is remote: a universal checkpoint is converted from a local folder")
    for option, value in (("inject_missing_state", inject_missing_state), ("strict", strict)):
        if type(value) is not bool:
            raise ExportError(where, f"{option} must be True or False, not {value!r:.40}", option=option)
    layout, folder_problems, _ = _tag_layout(scan(where), tag, None)
    refuse_incomplete(layout, folder_problems, "masters", verb="converted")
    if layout.universal:
        raise ExportError(layout.path, "is a universal checkpoint already")
    source = Source(layout)
    optim = natural_order(layout.of_kind(FileKind.OPTIM_STATES, FileKind.EXPERT_OPTIM_STATES))
    if not optim:
        raise ExportError(
            layout.path,
            "has no *_optim_states.pt files: ds_to_universal converts the optimizer shards of ZeRO stages "
            "1 to 3; a ZeRO-0 checkpoint keeps its optimizer state in the model states, which it does not read",
        )
    zero3 = [f for f in optim if _ZERO3_OPTIM.match(f.relpath)]
    first = source.checkpoint((zero3 or optim)[0].relpath)
    state = first.data.get("optimizer_state_dict") if isinstance(first.data, dict) else None
    if not isinstance(state, dict):
        raise ExportError(first.path, "has no 'optimizer_state_dict', which ds_to_universal reads the ZeRO stage from")
    stage = _stage(state.get("zero_stage", 1))
    if stage is None or not 0 <= stage <= 3:
        raise ExportError(first.path, f"optimizer_state_dict['zero_stage'] is {state.get('zero_stage')!r:.60}")
    if stage <= 2:
        kind, files, not_restored = plan_zero12(source, inject_missing_state=inject_missing_state, strict=strict)
    else:
        kind, files, not_restored = _plan_zero3(source, zero3 or optim, strict=strict)
        stage = 3
    if output_folder is not None:
        output = os.path.normpath(os.fspath(output_folder))  # "out/": latest_universal beside it, not in it
    else:
        tag_folder = os.path.abspath(layout.path)
        output = os.path.join(os.path.dirname(tag_folder), os.path.basename(tag_folder) + UNIVERSAL_SUFFIX)
    inside = os.path.relpath(os.path.abspath(output), os.path.abspath(layout.path))
    if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
        raise ExportError(output, f"is in the tag folder it converts ({layout.path})", option="output_folder")
    holds = os.path.relpath(os.path.abspath(layout.path), os.path.abspath(output))
    if holds != os.pardir and not holds.startswith(os.pardir + os.sep):  # --overwrite would remove the source
        raise ExportError(output, f"holds the tag folder it converts ({layout.path})", option="output_folder")
    return UniversalPlan(
        layout.path,
        layout.name,
        output,
        os.path.join(os.path.dirname(output), LATEST_UNIVERSAL),
        kind,
        stage if stage else 1,
        tuple(files),
        tuple(not_restored),
        inject_missing_state,
        strict,
    )


def natural_order(files: Sequence[LayoutFile]) -> list[LayoutFile]:
    """``files`` in ``ds_to_universal``'s order (``natural_keys``: runs of digits compared as numbers)."""

    def key(file: LayoutFile) -> list[tuple[int, int | str]]:
        parts = re.split(r"(\d+)", file.relpath)
        return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]

    return sorted(files, key=key)


def _plan_zero3(
    source: Source, optim: Sequence[LayoutFile], *, strict: bool
) -> tuple[str, list[UniversalFile], list[NotRestored]]:
    """ZeRO-3: ``_zero3``'s planner, which picks its files (``optim`` among them) as ds_to_universal
    does; ``strict`` for the tensor-parallel merge's unused patterns."""
    return plan_zero3(source, strict=strict)
