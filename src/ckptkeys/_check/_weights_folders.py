"""A folder of model weights as ``save_pretrained`` and ``ckptkeys export`` write it, checked against its index.

Such a folder holds ``model.safetensors``, or shards ``model-0000K-of-0000N.safetensors`` and the
index ``model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map": {tensor:
shard}}``); the same with torch files for ``pytorch_model.bin`` (``pytorch_model.bin.index.json``,
``pytorch_model-0000K-of-0000N.bin``). It is no DeepSpeed checkpoint: :func:`validate_path` asks
this module only about a folder :func:`scan` finds no checkpoint in. Each index is checked against
its shards: a shard it names that is missing (an error naming one tensor that needs it), a tensor
it maps to a shard that lacks it (an error), a tensor a shard holds that it does not list (a
warning), ``total_size`` against the sum of the tensors' sizes (a warning). Every weight file is
read, whether or not an index names it (safetensors headers as the format checks them; torch
files' pickles, with the security findings every torch file gets). Where the folder holds more
than one set of weights (``model.safetensors`` beside an index), transformers loads the first of
:data:`LOAD_ORDER` and never reads the others: that is said (``shadowed-weights``), an error when
the sets differ. A subfolder named like DeepSpeed's tags (``global_stepN``) in a folder with no
DeepSpeed checkpoint is a save that did not finish
(``incomplete-tag``, an error: a Trainer resuming with DeepSpeed finds ``global_step*`` and fails).

A remote folder (a URL) is its one listing: the index read by one GET, each safetensors file by its
length and header (two ranged GETs, never a tensor byte), each torch file as ``read`` reads a URL.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from .._read._errors import NotACheckpointError, ReadError
from .._read._files import read_small
from .._read._limits import Limits
from .._read._reader import Checkpoint, read_inside, read_object
from .._read._safetensors import SafetensorsFile, read_safetensors, read_safetensors_object
from .._read._source import RemoteFolder, is_url, list_remote
from .._read._torch import TensorInfo
from ._problems import Problem, Severity
from ._safetensors_files import severities
from ._security import globals_problems, read_error_problems

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

__all__ = ["WeightsFolderReport", "WeightsIndex", "is_weights_folder", "validate_weights_folder"]

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

# What marks a weights folder: an index, or the one file an unsharded save_pretrained writes.
_INDEX_SUFFIXES: Final = (".safetensors.index.json", ".bin.index.json")
_SINGLE_FILES: Final = ("model.safetensors", "pytorch_model.bin")
# A shard's name as transformers writes it: model-00001-of-00004.safetensors, pytorch_model-00001-of-00002.bin.
_SHARD_NAME: Final = re.compile(r".+-\d{5}-of-\d{5}\.(?:safetensors|bin)")
LOAD_ORDER: Final = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""The weights ``from_pretrained`` (transformers 5.24, ``_get_resolved_checkpoint_files``) takes
from a folder: the first of these that exists; it reads no other."""
# What a Trainer resuming with DeepSpeed takes for a DeepSpeed save (glob(f"{checkpoint}/global_step*")).
_TAG_NAME: Final = re.compile(r"global_step.*")
# An index is JSON naming every tensor once: 64 MiB is ~500,000 names of 100 characters.
_MAX_INDEX_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, repr=False)
class WeightsIndex:
    """One ``*.index.json`` of a weights folder, as read (``None`` fields where it lacks them).

    Its repr is one line (name, tensors, shards, ``total_size``); the map is :attr:`weight_map`.
    """

    name: str
    """The index file's name in the folder."""
    total_size: int | None
    """``metadata.total_size``: the bytes of all tensors, as the writer counted them."""
    metadata: dict[str, Any] | None
    weight_map: dict[str, str]
    """Tensor name to shard file name."""

    def __repr__(self) -> str:
        shards = len(set(self.weight_map.values()))
        total = "no total_size" if self.total_size is None else f"total_size {self.total_size:,}"
        return f"<WeightsIndex {self.name!r}: {len(self.weight_map):,} tensors in {shards:,} shards, {total}>"


@dataclass(frozen=True, slots=True, repr=False)
class WeightsFolderReport:
    """A validated weights folder: its indexes, its weight files read, and the problems.

    Its repr is one line (folder, files, indexes, problems by severity).
    """

    path: str
    indexes: tuple[WeightsIndex, ...]
    files: dict[str, SafetensorsFile | Checkpoint]
    """Every weight file read, by its name in the folder: shards, or the one unsharded file."""
    problems: tuple[Problem, ...]

    def __repr__(self) -> str:
        files, indexes = len(self.files), len(self.indexes)
        facts = f"{files} file{'' if files == 1 else 's'}, {indexes} index{'' if indexes == 1 else 'es'}"
        return f"<WeightsFolderReport {self.path!r}: {facts}, {severities(self.problems)}>"

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem of the report (here :attr:`problems`), as every report has them."""
        return self.problems

    def tensors(self, name: str) -> dict[str, int]:
        """The tensors of the weight file ``name`` with each one's size in bytes."""
        return _tensor_sizes(self.files[name])


def _tensor_sizes(file: SafetensorsFile | Checkpoint) -> dict[str, int]:
    if isinstance(file, SafetensorsFile):
        return {t.name: t.nbytes for t in file.tensors}
    data = file.data
    if not isinstance(data, dict):
        return {}
    return {str(k): v.nbytes for k, v in data.items() if isinstance(v, TensorInfo)}


def is_weights_folder(path: str, listing: RemoteFolder | None = None) -> bool:
    """Whether the folder at ``path`` (remote: a folder of ``listing``) holds an index or a
    ``model.safetensors``/``pytorch_model.bin``."""
    try:
        names = _names(path, listing)
    except (OSError, ReadError):
        return False
    return any(n.endswith(_INDEX_SUFFIXES) for n in names) or any(n in names for n in _SINGLE_FILES)


def _names(path: str, listing: RemoteFolder | None) -> list[str]:
    """The entries of the folder ``path``: listed, or from the remote ``listing`` (OSError, ReadError)."""
    if listing is None:
        return os.listdir(path)
    return [name for name, _, _ in listing.children(path)]


def _read_index(path: str, name: str, boundary: str | RemoteFolder, problems: list[Problem]) -> WeightsIndex | None:
    where = os.path.join(path, name)
    try:
        if isinstance(boundary, RemoteFolder):
            raw = boundary.read_small(where, _MAX_INDEX_BYTES)
        else:
            raw = read_small(where, boundary=boundary, max_bytes=_MAX_INDEX_BYTES)
        # Decoded strictly, as transformers opens it (encoding="utf-8"): a BOM is no JSON for it.
        document = json.loads(raw.decode("utf-8"))
    except ReadError as error:
        problems.append(Problem(E, "unreadable-index", error.reason, where))
        return None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        problems.append(Problem(E, "unreadable-index", f"is not JSON: {error!s:.200}", where))
        return None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        problems.append(Problem(E, "unreadable-index", "has no weight_map of tensor names to file names", where))
        return None
    if not weight_map:  # transformers: IndexError on the first shard of none
        problems.append(Problem(E, "unreadable-index", "has an empty weight_map: it names no tensor", where))
        return None
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else None
    total = metadata.get("total_size") if metadata is not None else None
    return WeightsIndex(name, total if type(total) is int else None, metadata, weight_map)


def _read_weights(path: str, boundary: str | RemoteFolder) -> SafetensorsFile | Checkpoint:
    if isinstance(boundary, RemoteFolder):
        source = boundary.open(boundary.name_of(path))
        if path.endswith(".safetensors"):
            return read_safetensors_object(source)
        return read_object(source, Limits())
    if path.endswith(".safetensors"):
        return read_safetensors(path, boundary=boundary)
    return read_inside(path, boundary)


def validate_weights_folder(
    path: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    listing: RemoteFolder | None = None,
) -> WeightsFolderReport:
    """Read the weights folder at ``path`` (shards and index, or one weight file) and check it.

    ``path`` may be a URL (``storage_options`` passed to its filesystem; ``listing``: a listing
    already made of it or of a folder above it): listed once, each file read by ranged GETs.
    Raises :class:`~ckptkeys.NotACheckpointError` if it holds no index, ``model.safetensors`` nor
    ``pytorch_model.bin``, and :class:`~ckptkeys.ReadError` if it cannot be listed.
    """
    root = os.fspath(path)
    boundary: str | RemoteFolder
    if is_url(root):
        boundary = listing if listing is not None else list_remote(root, storage_options)
    elif storage_options is not None or listing is not None:
        raise ValueError(f"storage_options apply to URLs only, not to the local path {root!r}")
    else:
        boundary = os.path.realpath(root)
    remote = boundary if isinstance(boundary, RemoteFolder) else None
    try:
        names = sorted(_names(root, remote))
    except OSError as error:
        raise ReadError(root, f"cannot be listed: {error.strerror or error}") from None
    problems: list[Problem] = []
    indexes = [
        index
        for name in names
        if name.endswith(_INDEX_SUFFIXES) and (index := _read_index(root, name, boundary, problems)) is not None
    ]
    if not indexes and not problems and not any(n in names for n in _SINGLE_FILES):
        raise NotACheckpointError(
            root, "holds no checkpoint: no DeepSpeed files, no weights index and no model weights"
        )
    wanted: list[str] = [n for n in _SINGLE_FILES if n in names]  # read whether or not there is an index
    for index in indexes:
        wanted += [s for s in dict.fromkeys(index.weight_map.values()) if s not in wanted]
    files: dict[str, SafetensorsFile | Checkpoint] = {}
    for shard in sorted(wanted):
        where = os.path.join(root, shard)
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            continue  # reported against its index below
        if shard not in names:
            continue
        try:
            files[shard] = _read_weights(where, boundary)
        except ReadError as error:
            problems += read_error_problems(where, error)
            continue
        found = files[shard]
        if isinstance(found, Checkpoint):
            problems += globals_problems(where, found.globals)
    for index in indexes:
        problems += _check_index(root, index, names, files)
    listed = {shard for index in indexes for shard in index.weight_map.values()}
    for name in names:
        if indexes and _SHARD_NAME.fullmatch(name) and name not in listed:
            problems.append(Problem(W, "unlisted-shard", "a weight file no index names", os.path.join(root, name)))
    problems += _shadowed(root, names, indexes, files)
    problems += _unfinished_tags(root, names, remote)
    problems.append(Problem(INFO, "not-deepspeed", f"not a DeepSpeed checkpoint: {_describe(indexes, files)}", root))
    return WeightsFolderReport(root, tuple(indexes), files, tuple(problems))


def _check_index(
    root: str, index: WeightsIndex, names: list[str], files: dict[str, SafetensorsFile | Checkpoint]
) -> list[Problem]:
    where = os.path.join(root, index.name)
    problems: list[Problem] = []
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in index.weight_map.items():
        by_shard.setdefault(shard, []).append(tensor)
    sizes: dict[str, int] = {}
    for shard, tensors in by_shard.items():
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            problems.append(
                Problem(E, "missing-shard", f"maps {tensors[0]!r} to {shard!r}, not a file of this folder", where)
            )
            continue
        if shard not in names:
            problems.append(
                Problem(
                    E,
                    "missing-shard",
                    f"{shard} is missing: the index maps {len(tensors)} tensor(s) to it, {tensors[0]!r} first",
                    os.path.join(root, shard),
                    tensors[0],
                )
            )
            continue
        if shard not in files:
            continue  # unreadable: already a problem
        held = _tensor_sizes(files[shard])
        sizes.update(held)
        for tensor in tensors:
            if tensor not in held:
                problems.append(
                    Problem(
                        E,
                        "shard-lacks-tensor",
                        f"the index maps {tensor!r} to {shard}, which does not hold it",
                        os.path.join(root, shard),
                        tensor,
                    )
                )
        for tensor in held:
            if index.weight_map.get(tensor) != shard:
                other = index.weight_map.get(tensor)
                said = f"maps it to {other}" if other is not None else "does not list it"
                problems.append(
                    Problem(
                        W,
                        "unlisted-tensor",
                        f"{shard} holds {tensor!r}; {index.name} {said}",
                        os.path.join(root, shard),
                        tensor,
                    )
                )
    complete = all(shard in files for shard in by_shard)
    if index.total_size is not None and complete:
        total = sum(sizes.get(tensor, 0) for tensor in index.weight_map)
        if total != index.total_size:
            problems.append(
                Problem(
                    W,
                    "index-total-size",
                    f"metadata.total_size is {index.total_size}, the tensors it maps hold {total} bytes",
                    where,
                    "metadata/total_size",
                )
            )
    return problems


def _shapes(file: SafetensorsFile | Checkpoint) -> dict[str, tuple[int, ...]]:
    if isinstance(file, SafetensorsFile):
        return {t.name: t.shape for t in file.tensors}
    data = file.data
    if not isinstance(data, dict):
        return {}
    return {str(k): tuple(v.shape) for k, v in data.items() if isinstance(v, TensorInfo)}


def _weights_of(
    name: str, indexes: list[WeightsIndex], files: dict[str, SafetensorsFile | Checkpoint]
) -> dict[str, tuple[int, ...] | None] | None:
    """The tensors (with shapes) that loading ``name`` (a weight file or an index) gives; None if unread.

    Shapes, not bytes: the same model saved in another dtype is the same model."""
    if name in files:
        return dict(_shapes(files[name]))
    index = next((i for i in indexes if i.name == name), None)
    if index is None or not all(shard in files for shard in index.weight_map.values()):
        return None
    shapes = {shard: _shapes(files[shard]) for shard in set(index.weight_map.values())}
    return {tensor: shapes[shard].get(tensor) for tensor, shard in index.weight_map.items()}


def _shadowed(
    root: str, names: list[str], indexes: list[WeightsIndex], files: dict[str, SafetensorsFile | Checkpoint]
) -> list[Problem]:
    """Each set of weights the loader does not read because one before it in :data:`LOAD_ORDER` exists."""
    present = [n for n in LOAD_ORDER if n in names]
    if len(present) < 2:
        return []
    loaded, loaded_weights = present[0], _weights_of(present[0], indexes, files)
    problems = []
    for other in present[1:]:
        other_weights = _weights_of(other, indexes, files)
        differ = loaded_weights is not None and other_weights is not None and loaded_weights != other_weights
        said = f"transformers loads {loaded} and never reads {other}"
        if differ:
            said += ": they hold different tensors; remove the one that is not this model's"
        problems.append(Problem(E if differ else W, "shadowed-weights", said, os.path.join(root, other)))
    return problems


def _unfinished_tags(root: str, names: list[str], listing: RemoteFolder | None) -> list[Problem]:
    """Subfolders named like DeepSpeed's default tag in a folder where scan found no DeepSpeed save
    (a subfolder holding DeepSpeed files would have been found as one)."""
    problems = []
    folders = {name for name, is_dir, _ in listing.children(root) if is_dir} if listing is not None else set()
    for name in names:
        where = os.path.join(root, name)
        if not _TAG_NAME.fullmatch(name):
            continue
        if listing is not None:  # a store's folder is a prefix with objects under it: never empty, never a link
            if name in folders:
                said = "a tag folder's name, but no DeepSpeed file"
                problems.append(Problem(E, "incomplete-tag", f"{said}: a DeepSpeed save that did not finish?", where))
            continue
        if not os.path.isdir(where):
            continue
        if os.path.islink(where):  # not followed (it may lead anywhere), but not passed over either
            target = os.path.realpath(where)
            said = f"a symlink to {target}, named like a tag folder but holding no save here: not followed"
            problems.append(Problem(E, "incomplete-tag", f"{said}; a DeepSpeed save that did not finish?", where))
            continue
        try:
            inside = os.listdir(where)
        except OSError:
            inside = []
        what = "an empty tag folder" if not inside else "a tag folder's name, but no DeepSpeed file"
        problems.append(Problem(E, "incomplete-tag", f"{what}: a DeepSpeed save that did not finish?", where))
    return problems


def _describe(indexes: list[WeightsIndex], files: dict[str, SafetensorsFile | Checkpoint]) -> str:
    tensors = sum(len(_tensor_sizes(f)) for f in files.values())
    formats = sorted({"safetensors" if isinstance(f, SafetensorsFile) else "torch" for f in files.values()})
    kind = " and ".join(formats) or "weight"
    if indexes:
        shards = len({s for index in indexes for s in index.weight_map.values()})
        listed = " and ".join(index.name for index in indexes)
        beside = [n for n in _SINGLE_FILES if n in files]  # read too: a loader may take it first
        if beside:
            also = " and ".join(beside)
            return f"a folder of {shards} {kind} shard(s) with {listed}, and {also}, {tensors} tensors in all"
        return f"a folder of {shards} {kind} shard(s) with {listed}, {tensors} tensors"
    return f"a folder of model weights ({', '.join(files) or 'unreadable'}), {tensors} tensors"
