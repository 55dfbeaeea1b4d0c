"""The small files ``from_pretrained`` needs beside the weights, found in a Hugging Face save.

A Trainer's ``checkpoint-N/`` (and its ``output_dir``) holds ``config.json``, ``generation_config.json``
and the tokenizer's files beside the DeepSpeed checkpoint; an export without them does not load with
``from_pretrained``. Only the names below are taken (never weights, which the export itself writes),
only regular files inside their folder, each at most :data:`MAX_SIDE_FILE_BYTES`.
"""

from __future__ import annotations

import io
import os

from .._read._errors import ReadError
from .._read._files import open_regular, read_small
from .._read._source import RemoteObject, list_remote
from ._types import ExportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Final

__all__ = [
    "MAX_SIDE_FILE_BYTES",
    "SIDE_FILE_NAMES",
    "find_remote_side_files",
    "find_side_files",
    "open_side_file",
    "read_remote_side_file",
    "read_side_file",
]

SIDE_FILE_NAMES: Final = (
    # transformers 5.24 utils: CONFIG_NAME, GENERATION_CONFIG_NAME, PROCESSOR_NAME,
    # FEATURE_EXTRACTOR_NAME / IMAGE_PROCESSOR_NAME, VIDEO_PROCESSOR_NAME, AUDIO_TOKENIZER_NAME
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "audio_tokenizer_config.json",
    # tokenization_utils_base: FULL_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE,
    # ADDED_TOKENS_FILE; utils.hub: CHAT_TEMPLATE_FILE, LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    # the vocabulary files of the models' tokenizers (vocab_files_names), the common ones
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""The files taken, by name (``transformers`` 5.24's own names for them)."""

MAX_SIDE_FILE_BYTES: Final = 64 << 20
"""The largest side file copied: the biggest tokenizer files of released models are tens of MB
(Gemma's ``tokenizer.json``, 33 MB); a larger file of one of these names is not a small file and is refused."""


def find_side_files(folders: Sequence[str]) -> tuple[str, ...]:
    """The side files of the first of ``folders`` (a save folder, then its run folder) that has any.

    One folder's files, never a mix: a run folder's ``config.json`` beside a save's tokenizer could
    come from another model. Raises :class:`ExportError` naming a file of these names that is not a
    regular file inside its folder (a symlink out, a FIFO) or is larger than :data:`MAX_SIDE_FILE_BYTES`.
    """
    for folder in folders:
        paths = [os.path.join(folder, name) for name in SIDE_FILE_NAMES]
        present = [path for path in paths if os.path.lexists(path)]
        if present:
            for path in present:
                open_side_file(path).close()
            return tuple(present)
    return ()


def find_remote_side_files(
    folders: Sequence[str], storage_options: Mapping[str, Any] | None
) -> dict[str, RemoteObject]:
    """:func:`find_side_files` of remote folders (URLs): the side files of the first that has any,
    by URL, each the object its folder's listing gave (one listing a folder, no HEAD), so it is
    fetched pinned to the version listed. Raises :class:`ExportError` naming one larger than
    :data:`MAX_SIDE_FILE_BYTES`."""
    for folder in folders:
        listing = list_remote(folder, storage_options)
        present = {name: size for name, is_folder, size in listing.children(folder) if not is_folder}
        found = {}
        for name in SIDE_FILE_NAMES:
            if name in present:
                source = listing.open(listing.name_of(folder.rstrip("/") + "/" + name))
                if source.size > MAX_SIDE_FILE_BYTES:
                    raise ExportError(
                        source.url,
                        f"is larger than {MAX_SIDE_FILE_BYTES} bytes, not a small file: not copied beside the weights",
                    )
                found[source.url] = source
        if found:
            return found
    return {}


def read_remote_side_file(source: RemoteObject) -> bytes:
    """The bytes of a remote side file: one GET of the whole (small) object, pinned to the version
    listed; a :class:`~ckptkeys.ReadError` naming it if the store does not serve it as listed."""
    data = source.fetch([(0, source.size)])[0] if source.size else b""
    source.confirm()
    return data


def open_side_file(path: str) -> io.FileIO:
    """``path`` opened for reading, if it is a regular file inside its folder of at most
    :data:`MAX_SIDE_FILE_BYTES`; else :class:`ExportError` naming it and saying why."""
    try:
        return open_regular(path, boundary=os.path.realpath(os.path.dirname(path)), max_bytes=MAX_SIDE_FILE_BYTES)
    except ReadError as error:
        raise ExportError(path, f"{error.reason}: not copied beside the weights") from None


def read_side_file(path: str) -> bytes:
    """The bytes of ``path``, read as :func:`open_side_file` allows (a file that grows past
    :data:`MAX_SIDE_FILE_BYTES` while read is refused too); else :class:`ExportError` naming it."""
    try:
        return read_small(path, boundary=os.path.realpath(os.path.dirname(path)), max_bytes=MAX_SIDE_FILE_BYTES)
    except ReadError as error:
        raise ExportError(path, f"{error.reason}: not copied beside the weights") from None
