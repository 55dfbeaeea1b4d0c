"""A ``torch.Tensor`` subclass that test files rebuild (``_rebuild_from_type_v2``); needs torch."""

from __future__ import annotations

import torch


class ValueTensor(torch.Tensor):  # type: ignore[misc]
    """A subclass without state of its own: torch.load gives the base tensor's values as this class."""
