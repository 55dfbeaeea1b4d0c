"""Torch files that are not DeepSpeed checkpoints: the rule that tells them apart, and what they are.

Most torch files people have are ``torch.save(model.state_dict())``, a pickled module, a
training script's own dict, or a trainer's side files (``optimizer.pt``, ``rng_state.pth``,
``training_args.bin``). Checking them against DeepSpeed's schema only says that every DeepSpeed
key is missing. A file is taken as DeepSpeed's when its name is one DeepSpeed writes (which
``naming.parse`` decides, before this module is asked) or when its top-level dict holds a
:data:`MARKERS` key with any value but a tensor (a value of the wrong type then is a ``wrong-type``
error, as in any DeepSpeed file: a doctored or renamed DeepSpeed file does not pass as plain);
anything else is described, once, by
:func:`plain_file_problem`. Security findings do not depend on this: every file's globals are
classified whatever it holds.
"""

from __future__ import annotations

from .. import schema
from .._read._pickle import Opaque
from .._read._torch import TensorInfo, tensors_in
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["MARKERS", "describe", "is_deepspeed_dict", "plain_file_problem"]

# Keys DeepSpeed writes at the top level of every model-states or optimizer-states file that
# training code of its own also uses at the top level (a loop's {"model", "optimizer", "global_steps",
# "lr_scheduler"}, PyTorch's tutorial's "optimizer_state_dict"): they say nothing about the writer.
_GENERIC: Final = frozenset({"module", "optimizer", "lr_scheduler", "optimizer_state_dict", "global_steps"})

MARKERS: Final[dict[str, schema.KeySpec]] = {
    str(spec.key): spec
    for kind in (schema.MODEL_STATES, schema.OPTIM_STATES_FILE)
    for spec in kind.keys
    if str(spec.key) not in _GENERIC
}
"""The keys that make a top-level dict DeepSpeed's: every key DeepSpeed writes at the top level of
a model-states or optimizer-states file (``ds_version``, ``ds_config``, ``param_shapes``,
``dp_world_size``, and those only some saves hold: ``shared_params``, ``data_sampler``,
``random_ltd``, ``global_samples``, ...), less the generic names training code uses too. One
counts with any value but a tensor, so a state dict with a tensor named ``ds_version`` stays a
state dict."""

# The top-level keys of torch.optim.Optimizer.state_dict().
_OPTIMIZER_KEYS: Final = frozenset({"state", "param_groups"})


def is_deepspeed_dict(data: Any) -> bool:
    """Whether ``data`` (a file's top level) holds a :data:`MARKERS` key whose value is not a tensor."""
    if not isinstance(data, dict):
        return False
    return any(key in data and not isinstance(data[key], TensorInfo) for key in MARKERS)


def _count(items: int, noun: str) -> str:
    return f"{items} {noun}{'' if items == 1 else 's'}"


def describe(data: Any) -> str:
    """What a torch file that is not DeepSpeed's holds, in a few words: "a plain state dict of 14 tensors"."""
    tensors = sum(1 for _ in tensors_in(data))
    if isinstance(data, TensorInfo):
        return f"a single tensor ({data.dtype}, shape {list(data.shape)})"
    if isinstance(data, Opaque):
        inside = f" ({_count(tensors, 'tensor')})" if tensors else ""
        return f"a pickled object of class {data.qualname}{inside}"
    if isinstance(data, dict):
        if not data:
            return "an empty dict"
        if all(isinstance(value, TensorInfo) for value in data.values()):
            return f"a plain state dict of {_count(len(data), 'tensor')}"
        if set(data) == _OPTIMIZER_KEYS:
            return f"an optimizer's state dict (state, param_groups) of {_count(tensors, 'tensor')}"
        return f"a dict of {_count(len(data), 'key')} ({_count(tensors, 'tensor')})"
    if isinstance(data, (list, tuple)):
        return f"a {type(data).__name__} of {_count(len(data), 'item')} ({_count(tensors, 'tensor')})"
    return f"a pickled {type(data).__name__}"


def plain_file_problem(path: str, data: Any) -> Problem:
    """The one ``not-deepspeed`` information a plain torch file gets instead of DeepSpeed's checks."""
    return Problem(Severity.INFO, "not-deepspeed", f"not a DeepSpeed checkpoint: {describe(data)}", path)
