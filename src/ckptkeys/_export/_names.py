"""Output names: a module attribute's prefix stripped (``--strip-prefix``); ``ExportPlan.common_prefix`` suggests it.

Lightning saves a ``LightningModule``, whose model is an attribute (``self.model``, ``self.m``): every
name in the checkpoint starts with it (``model.transformer.wte.weight``), and under DeepSpeed the
strategy's wrapper may add ``_forward_module.``. ``from_pretrained`` and ``load_state_dict`` of the
bare model want the names without it.
"""

from __future__ import annotations

from dataclasses import replace

from ._types import ExportError, OptionError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._types import ExportTensor

__all__ = ["strip_prefix"]


def strip_prefix(
    checkpoint: str, prefix: str, tensors: Sequence[ExportTensor], aliases: dict[str, str]
) -> tuple[list[ExportTensor], dict[str, str]]:
    """``tensors`` and ``aliases`` (alias -> owner) with ``prefix`` taken off every name.

    Raises :class:`ExportError` (``option`` ``"strip_prefix"``) naming the first name that does not
    start with ``prefix``, or that is nothing but ``prefix``: a model whose names do not all share it
    is not one attribute's; :class:`OptionError` for an empty ``prefix``.
    """
    if not prefix:
        raise OptionError("strip_prefix", "must not be empty")

    def strip(name: str) -> str:
        if not isinstance(name, str) or not name.startswith(prefix) or name == prefix:
            raise ExportError(
                checkpoint,
                f"tensor {name!r:.80} does not start with {prefix!r:.80}",
                option="strip_prefix",
            )
        return name[len(prefix) :]

    stripped = [replace(tensor, name=strip(tensor.name)) for tensor in tensors]
    return stripped, {strip(alias): strip(owner) for alias, owner in aliases.items()}
