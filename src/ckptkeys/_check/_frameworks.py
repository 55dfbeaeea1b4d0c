"""What training frameworks put around a DeepSpeed checkpoint: their files, client state, save names.

Hugging Face ``Trainer`` writes ``output_dir/checkpoint-N/`` (a save folder plus the Trainer's
own files), Accelerate's ``save_state`` with automatic checkpoint naming writes
``checkpoints/checkpoint_N/`` (plus ``random_states_R.pkl``), and Lightning's
``ModelCheckpoint`` writes ``dirpath/epoch=E-step=S.ckpt/`` (a save folder whose tag is
``checkpoint``, with Lightning's client state merged into the model states). Knowing them lets
ckptkeys list those files as the framework's instead of reading or flagging them.
"""

from __future__ import annotations

import json
import os
import re

from .._read._files import read_small
from .._read._source import RemoteFolder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

__all__ = [
    "ACCELERATE",
    "LIGHTNING",
    "MAX_STATE_BYTES",
    "NAMES",
    "TRANSFORMERS",
    "client_state_framework",
    "framework_of_files",
    "framework_of_save_name",
    "is_framework_file",
    "save_step",
]

TRANSFORMERS: Final = "transformers"
ACCELERATE: Final = "accelerate"
LIGHTNING: Final = "lightning"
NAMES: Final = {TRANSFORMERS: "Hugging Face Trainer", ACCELERATE: "Accelerate", LIGHTNING: "Lightning"}
"""How each framework is called in text."""

# Files a framework writes beside a save (or beside its saves), by framework.
_FILES: Final = {
    TRANSFORMERS: re.compile(
        r"trainer_state\.json|training_args\.bin|rng_state(_\d+)?\.pth|scheduler\.pt|optimizer\.pt|scaler\.pt"
        r"|(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?"
        r"|(config|generation_config|adapter_config|preprocessor_config|processor_config|video_preprocessor_config"
        r"|audio_tokenizer_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab|chat_template)\.json"
        r"|merges\.txt|vocab\.txt|(tokenizer|spiece|sentencepiece\.bpe)\.model|chat_template\.jinja"
    ),
    ACCELERATE: re.compile(
        r"random_states_\d+\.pkl|custom_checkpoint_\d+\.pkl|(scheduler|sampler|optimizer|dl_state_dict)(_\d+)?\.bin"
        r"|scaler\.pt|model(_\d+)?\.safetensors|pytorch_model(_\d+)?\.bin"
    ),
}
# The file that tells a save folder's framework.
_MARKERS: Final = (
    (TRANSFORMERS, re.compile(r"trainer_state\.json")),
    (ACCELERATE, re.compile(r"random_states_\d+\.pkl")),
)

# Client state a framework merges into the model states; the first key marks the framework.
CLIENT_STATE: Final = {
    LIGHTNING: (
        "pytorch-lightning_version",
        "epoch",
        "global_step",
        "loops",
        "callbacks",
        "lr_schedulers",
        "hparams_name",
        "hyper_parameters",
        "datamodule_hparams_name",
        "datamodule_hyper_parameters",
    ),
}

_STEP_NAMES: Final = (
    (TRANSFORMERS, re.compile(r"checkpoint-(\d+)")),
    (ACCELERATE, re.compile(r"checkpoint_(\d+)")),
    (LIGHTNING, re.compile(r".*\bstep=(\d+).*\.ckpt")),
    (None, re.compile(r"global_step(\d+)")),
)
# trainer_state.json grows by ~150 bytes per logged step (1,054 bytes at step 2, 1,356 at step 4 in
# fixtures-clients/hf_trainer_z2_bf16, logging every step): 16 MiB holds ~110,000 logged steps,
# a million steps logged every 10. Larger is not a Trainer's file and is not parsed.
MAX_STATE_BYTES: Final = 16 << 20


def is_framework_file(name: str) -> bool:
    """Whether a file called ``name`` is one a framework writes beside its saves."""
    return any(pattern.fullmatch(name) for pattern in _FILES.values())


def framework_of_files(names: Iterable[str]) -> str | None:
    """The framework whose marker file is among ``names`` (the entries of a save folder)."""
    names = list(names)
    for framework, pattern in _MARKERS:
        if any(pattern.fullmatch(name) for name in names):
            return framework
    return None


def framework_of_save_name(name: str) -> str | None:
    """The framework that names its save folders like ``name`` (``checkpoint-500``, ``epoch=0-step=4.ckpt``)."""
    for framework, pattern in _STEP_NAMES:
        if pattern.fullmatch(name):
            return framework
    return None


def client_state_framework(keys: Iterable[object]) -> tuple[str, tuple[str, ...]] | None:
    """The framework whose client state is among ``keys`` (top-level model-states keys), and its keys there."""
    present = {key for key in keys if isinstance(key, str)}
    for framework, known in CLIENT_STATE.items():
        if known[0] in present:
            return framework, tuple(key for key in known if key in present)
    return None


def save_step(path: str, boundary: str | RemoteFolder | None = None) -> int | None:
    """The training step of the save folder at ``path``: from its name, else from ``trainer_state.json``.

    ``trainer_state.json`` is read only if it is a regular file of at most :data:`MAX_STATE_BYTES`
    inside ``boundary``: otherwise :class:`~ckptkeys.ReadError` names it and says why. A save
    without one, or with one that holds no step, has no step (``None``). A remote save's
    ``boundary`` is the run's listing: the file is looked up there and read by one GET.
    """
    name = os.path.basename(os.path.normpath(path))
    for _, pattern in _STEP_NAMES:
        match = pattern.fullmatch(name)
        if match:
            return int(match.group(1))
    state = os.path.join(path, "trainer_state.json")
    if isinstance(boundary, RemoteFolder):
        if not boundary.is_file(state):
            return None
        raw = boundary.read_small(state, MAX_STATE_BYTES)
    elif not os.path.lexists(state):
        return None
    else:
        raw = read_small(state, boundary=boundary, max_bytes=MAX_STATE_BYTES)
    try:
        step = json.loads(raw.decode("utf-8")).get("global_step")
    except (ValueError, AttributeError, RecursionError):
        return None
    return step if type(step) is int and step >= 0 else None
