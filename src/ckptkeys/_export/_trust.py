"""What export trusts in a file: globals that cannot change a tensor, tensors nothing else changes.

Export takes each tensor's values from its storage bytes and its rebuild's arguments. ``torch.load``
then runs the rest of the pickle, and a call there can change a tensor in place or replace an
entry of the state dict: ``torch.nn.init.zeros_(w)``, ``operator.setitem(module, name, t)``, or,
with only globals ``weights_only=True`` allows, a Parameter rebuilt over ``w``'s storage whose
pickled state sets ``real``. So a file is exported only when (1) no tensor anywhere in it is
rebuilt with state or metadata that changes values (``TensorInfo.altered_by``: the change can
reach every tensor sharing its storage), and (2) every global it names is on torch's weights-only
allow-list, is a torch storage class (persistent ids name them), or is one of DeepSpeed's own
data classes, which hold numbers and never touch a tensor.
"""

from __future__ import annotations

from .._read._globals import DEEPSPEED_DATA_GLOBALS, classify
from .._read._torch import storage_dtype, tensors_in
from ._types import ExportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._read._reader import Checkpoint

__all__ = ["check_trusted"]


def check_trusted(checkpoint: Checkpoint) -> None:
    """Refuse (:class:`ExportError`, naming the file and what) a file whose values torch.load may change."""
    for where, tensor in tensors_in(checkpoint.data):
        if tensor.altered_by is not None:
            raise ExportError(
                checkpoint.path,
                f"the tensor at {where} is rebuilt as torch.load gives no plain copy of its bytes: "
                f"{tensor.altered_by}; that can change every tensor sharing its storage",
            )

    foreign = [
        ref
        for ref in checkpoint.globals
        if classify(ref) != "allowed" and ref.qualname not in DEEPSPEED_DATA_GLOBALS and storage_dtype(ref) is None
    ]
    if foreign:
        names = ", ".join(ref.qualname for ref in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ExportError(
            checkpoint.path,
            f"names {names}: torch.load(weights_only=False) imports and calls it, which can change the tensors "
            "it gives (or run code); export reads only files whose globals are torch's weights-only allow-list "
            "or DeepSpeed's own data classes",
        )
