"""``inspect`` and ``validate`` of a URL: the local copy's report (paths aside), from one listing and ranged GETs.

Every save folder of ``tests/data/fixtures/`` and ``tests/data/clients/`` (and the runs there),
tag folders and single files are uploaded to moto's S3 server on 127.0.0.1 (s3fs as the client)
and reported by ``ckptkeys._cli._main.main`` as JSON: the document must be the local copy's with
the root path replaced by the URL. The server logs every request: a command lists the folder once,
sends no HEAD per file and never a whole-object GET, so a change that downloads whole files
fails here. ``memory://`` covers fsspec without a server for a subset.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import shutil
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli._main import main
from ckptkeys._read import _source
from ckptkeys._read._source import HEAD_BYTES, TAIL_BYTES

from .conftest import DATA, FIXTURES
from .remote_support import S3, Fetched, memory, s3, s3_server, upload  # noqa: F401 (fixtures)

fsspec = pytest.importorskip("fsspec")

CLIENTS = DATA / "clients"
RUNS = sorted(p for p in CLIENTS.iterdir() if p.is_dir())
SAVES = sorted(p for p in FIXTURES.iterdir() if p.is_dir()) + sorted(
    save for run in RUNS for save in run.iterdir() if save.is_dir()
)
TAGS = [
    FIXTURES / "z2_bf16_ws2" / "global_step3",
    FIXTURES / "z3_bf16_ws2" / "global_step3",
    FIXTURES / "uc_z2_bf16_ws2",
]
FILES = [
    FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt",
    FIXTURES / "z3_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
    CLIENTS / "hf_trainer_z2_bf16" / "model.safetensors",
    CLIENTS / "hf_trainer_z2_bf16" / "checkpoint-2" / "rng_state.pth",
]


def _name(path: pathlib.Path) -> str:
    return path.relative_to(DATA).as_posix()


def _run(*argv: str) -> tuple[int, str, str]:
    """``ckptkeys ARGV``: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _document(*argv: str) -> tuple[int, Any]:
    status, out, _ = _run(*argv, "--json", "--quiet")
    return status, json.loads(out)


def _same_report(local: pathlib.Path, url: str, *argv: str, options: list[str] | None = None) -> None:
    """``inspect`` and ``validate --json`` of ``url`` give the local copy's document, its root replaced."""
    for command in ("inspect", "validate"):
        status, text = _run(command, str(local), *argv, "--json", "--quiet")[:2]
        expected = json.loads(text.replace(str(local), url))
        remote_status, remote = _document(command, url, *argv, *(options or []))
        assert (remote_status, remote) == (status, expected), (command, url)
    status, shown, _ = _run("validate", str(local), *argv)
    assert _run("validate", url, *argv, *(options or []))[:2] == (status, shown.replace(str(local), url))


def _s3_options(s3: S3) -> list[str]:
    return ["--storage-options", json.dumps(s3.options)]


def _s3_copy(s3: S3, folder: pathlib.Path, prefix: str) -> str:
    upload(s3.put, folder, prefix)
    return f"s3://{s3.bucket}/{prefix}"


def _objects(s3: S3, prefix: str, folder: pathlib.Path) -> list[str]:
    return [f"{prefix}/{p.relative_to(folder).as_posix()}" for p in sorted(folder.rglob("*")) if p.is_file()]


def _mark(s3: S3) -> int:
    """Where the server's log stands: what a command asks after it is counted from there."""
    with s3.counter.lock:
        return len(s3.counter.log)


def _requests(s3: S3, name: str, since: int) -> dict[str, int]:
    """GETs, HEADs, bytes sent and whole-object GETs (no Range) of the object ``name`` after ``since``."""
    with s3.counter.lock:
        mine = [e for e in s3.counter.log[since:] if e.path == f"/{s3.bucket}/{name}"]
    return {
        "GET": sum(e.method == "GET" for e in mine),
        "HEAD": sum(e.method == "HEAD" for e in mine),
        "bytes": sum(e.sent for e in mine if e.method == "GET"),
        "whole": sum(e.method == "GET" and e.range is None for e in mine),
    }


def _listings(s3: S3, since: int) -> int:
    """The LIST requests of the test's bucket after ``since`` (a GET of the bucket itself)."""
    with s3.counter.lock:
        return sum(e.method == "GET" and e.path.strip("/") == s3.bucket for e in s3.counter.log[since:])


# -- the same report as the local copy --------------------------------------------------------------


@pytest.mark.parametrize("folder", SAVES, ids=_name)
def test_s3_save_folder_reports_as_its_local_copy(s3: S3, folder: pathlib.Path) -> None:
    url = _s3_copy(s3, folder, folder.name)
    _same_report(folder, url, options=_s3_options(s3))


@pytest.mark.parametrize("run", RUNS, ids=_name)
def test_s3_run_reports_as_its_local_copy_newest_every_and_one_save(s3: S3, run: pathlib.Path) -> None:
    url = _s3_copy(s3, run, run.name)
    options = _s3_options(s3)
    _same_report(run, url, options=options)
    _same_report(run, url, "--all", options=options)
    since = _mark(s3)
    assert _document("validate", url, "--all", *options)[0] == 0
    assert _listings(s3, since) == 1  # the run, its saves and their tags: one listing
    for name in _objects(s3, run.name, run):
        got = _requests(s3, name, since)
        assert got["HEAD"] == got["whole"] == 0 and got["GET"] <= 3, (name, got)
    oldest = sorted((p for p in run.iterdir() if p.is_dir()), key=lambda p: p.name)[0].name
    _same_report(run, url, "--save", oldest, options=options)
    local = _run("inspect", str(run), "--save", "nothing", "--json")
    remote = _run("inspect", url, "--save", "nothing", "--json", *options)
    assert remote[0] == local[0] == 2
    assert remote[2] == local[2].replace(str(run), url)  # the saves it has, named as locally


@pytest.mark.parametrize("tag", TAGS, ids=_name)
def test_s3_tag_folder_reports_as_its_local_copy(s3: S3, tag: pathlib.Path) -> None:
    url = _s3_copy(s3, tag, f"copy/{tag.name}")  # a tag is named by its folder
    _same_report(tag, url, options=_s3_options(s3))


@pytest.mark.parametrize("file", FILES, ids=_name)
def test_s3_single_file_reports_as_its_local_copy(s3: S3, file: pathlib.Path) -> None:
    url = s3.put(f"one/{file.name}", file.read_bytes())
    _same_report(file, url, "--depth", "3", options=_s3_options(s3))


def test_s3_run_of_saves_named_without_a_step_reports_as_its_local_copy(s3: S3, tmp_path: pathlib.Path) -> None:
    """Saves whose names tell no step: the step from each one's trainer_state.json (one GET), as locally."""
    run = tmp_path / "renamed"
    for save, name in (("checkpoint-4", "first"), ("checkpoint-2", "second")):
        shutil.copytree(CLIENTS / "hf_trainer_z2_bf16" / save, run / name)
    url = _s3_copy(s3, run, run.name)
    since = _mark(s3)
    _same_report(run, url, "--all", options=_s3_options(s3))
    assert [s.name for s in ckptkeys.scan_run(url, storage_options=s3.options).saves] == ["first", "second"]
    assert _requests(s3, f"{run.name}/first/trainer_state.json", since)["GET"] >= 1


def test_s3_weights_folder_reports_as_its_local_copy(s3: S3, tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    single = CLIENTS / "hf_trainer_z2_bf16" / "model.safetensors"
    shutil.copy(single, folder / "model.safetensors")
    shutil.copy(CLIENTS / "hf_trainer_z2_bf16" / "config.json", folder / "config.json")
    # The same weights as a shard and its index too (transformers loads model.safetensors first).
    shutil.copy(single, folder / "model-00001-of-00001.safetensors")
    names = [t.name for t in ckptkeys.read_safetensors(single).tensors]
    index = {"metadata": {"total_size": 1}, "weight_map": {name: "model-00001-of-00001.safetensors" for name in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "global_step9").mkdir()
    (folder / "global_step9" / "note.txt").write_text("a save that did not finish")
    url = _s3_copy(s3, folder, "weights")
    _same_report(folder, url, options=_s3_options(s3))
    since = _mark(s3)
    assert _document("validate", url, *_s3_options(s3))[1]["kind"] == "weights"
    counts = _requests(s3, "weights/model.safetensors", since)
    header = 8 + int.from_bytes((folder / "model.safetensors").read_bytes()[:8], "little")
    assert counts["whole"] == counts["HEAD"] == 0 and counts["GET"] == 2  # its length, then its header
    assert counts["bytes"] == header < (folder / "model.safetensors").stat().st_size
    assert _listings(s3, since) == 1


@pytest.mark.parametrize(
    "folder",
    [FIXTURES / "z2_bf16_ws2", CLIENTS / "hf_trainer_z2_bf16", FIXTURES / "z2_bf16_ws2" / "global_step3"],
    ids=_name,
)
def test_memory_reports_as_the_local_copy(memory: Fetched, folder: pathlib.Path) -> None:
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), folder, f"copy/{folder.name}")
    url = f"memory://copy/{folder.name}"
    _same_report(folder, url)
    file = next(p for p in sorted(folder.rglob("*.pt")))
    _same_report(file, f"{url}/{file.relative_to(folder).as_posix()}")
    fetched = [call for calls in memory.calls.values() for call in calls]
    assert fetched and all(start is not None and end is not None for start, end, _ in fetched)  # ranged only


# -- the public functions ----------------------------------------------------------------------------


def _problems(problems: Any, local: pathlib.Path, url: str) -> list[tuple[Any, ...]]:
    return [
        (p.severity, p.code, p.message, (p.file or "").replace(str(local), url), p.key_path) for p in problems
    ]


def test_public_functions_take_a_url_and_storage_options(s3: S3) -> None:
    run = CLIENTS / "hf_trainer_z2_bf16"
    url = _s3_copy(s3, run, "run")
    options = s3.options
    newest = max((p for p in run.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    tag = next(p for p in newest.iterdir() if p.is_dir())
    tag_url = f"{url}/{newest.name}/{tag.name}"
    file = tag / "mp_rank_00_model_states.pt"

    expected = _problems(ckptkeys.validate(run), run, url)
    assert _problems(ckptkeys.validate(url, storage_options=options), run, url) == expected
    assert _problems(ckptkeys.validate_path(url, storage_options=options).all_problems, run, url) == expected
    assert _problems(ckptkeys.validate_run(url, storage_options=options).all_problems, run, url) == expected
    remote_run, local_run = ckptkeys.scan_run(url, storage_options=options), ckptkeys.scan_run(run)
    assert [(s.name, s.step) for s in remote_run.saves] == [(s.name, s.step) for s in local_run.saves]
    assert (remote_run.framework, remote_run.framework_files) == (local_run.framework, local_run.framework_files)
    folder = ckptkeys.validate_folder(f"{url}/{newest.name}", storage_options=options)
    local_folder = ckptkeys.validate_folder(newest)
    assert _problems(folder.all_problems, run, url) == _problems(local_folder.all_problems, run, url)
    remote_tag = ckptkeys.validate_tag(tag_url, storage_options=options)
    assert _problems(remote_tag.problems, run, url) == _problems(ckptkeys.validate_tag(tag).problems, run, url)
    remote_file = ckptkeys.validate_file(f"{tag_url}/{file.name}", storage_options=options)
    assert _problems(remote_file.problems, run, url) == _problems(ckptkeys.validate_file(file).problems, run, url)
    layout = ckptkeys.scan(url, read=True, storage_options=options, save=newest.name)
    assert layout.run == url and layout.path == f"{url}/{newest.name}"

    for call in (
        lambda: ckptkeys.validate(run, storage_options={}),
        lambda: ckptkeys.validate({}, storage_options={}),
        lambda: ckptkeys.validate_path(run, storage_options={}),
        lambda: ckptkeys.validate_run(run, storage_options={}),
        lambda: ckptkeys.validate_folder(newest, storage_options={}),
        lambda: ckptkeys.validate_tag(tag, storage_options={}),
        lambda: ckptkeys.validate_file(file, storage_options={}),
        lambda: ckptkeys.scan_run(run, storage_options={}),
    ):
        with pytest.raises(ValueError, match="storage_options apply to URLs only"):
            call()


# -- what is fetched ---------------------------------------------------------------------------------


def _padded(source: pathlib.Path, after: int) -> bytes:
    """A torch zip rebuilt (stored) with a member of ``after`` bytes after its records: a file too big to
    fetch whole within the head and tail, holding the same checkpoint."""
    with zipfile.ZipFile(source) as original:
        infos = original.infolist()
        folder = infos[0].filename.split("/", 1)[0]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
            for info in infos:
                rebuilt.writestr(info, original.read(info))
            rebuilt.writestr(f"{folder}/padding_after", bytes(after))
    return out.getvalue()


def _per_file(s3: S3, names: list[str], since: int) -> dict[str, dict[str, int]]:
    return {name: _requests(s3, name, since) for name in names}


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_s3_requests_one_listing_no_head_no_whole_get_at_most_3_gets_per_file(s3: S3, command: str) -> None:
    folder = FIXTURES / "z3_bf16_ws2"
    url = _s3_copy(s3, folder, "z3")
    since = _mark(s3)
    status, _ = _document(command, url, *_s3_options(s3))
    assert status == 0
    counts = _per_file(s3, _objects(s3, "z3", folder), since)
    assert _listings(s3, since) == 1
    for name, got in counts.items():
        size = (folder / name.split("/", 1)[1]).stat().st_size
        assert got["HEAD"] == 0 and got["whole"] == 0, name
        if name.endswith(".pt"):
            assert 1 <= got["GET"] <= 3, (name, got)
            assert got["bytes"] <= min(size, HEAD_BYTES + TAIL_BYTES), (name, got)
        else:  # latest: one GET of its few bytes (once to tell the folder's kind, once to report it)
            assert got["GET"] <= 2 and got["bytes"] <= 2 * size, (name, got)
    print(f"\n{command} {folder.name} over S3: 1 LIST; per file GETs/bytes:", {
        name.split("/", 1)[1]: (got["GET"], got["bytes"]) for name, got in counts.items()
    })  # fmt: skip


def test_s3_big_file_is_never_fetched_whole(s3: S3, tmp_path: pathlib.Path) -> None:
    """A tag whose files are far bigger than head and tail: a whole download would send their size."""
    tag = tmp_path / "global_step3"
    shutil.copytree(FIXTURES / "z2_bf16_ws2" / "global_step3", tag)
    for file in sorted(tag.glob("*.pt")):
        file.write_bytes(_padded(file, 4 << 20))
    url = _s3_copy(s3, tag, f"big/{tag.name}")
    since = _mark(s3)
    _same_report(tag, url, options=_s3_options(s3))
    once = _mark(s3)
    assert _document("validate", url, *_s3_options(s3))[0] == 0
    print(f"\nvalidate of a tag padded to {sorted(f.stat().st_size for f in tag.glob('*.pt'))} bytes over S3:", {
        file.name: (got["GET"], got["bytes"]) for file in sorted(tag.glob("*.pt"))
        for got in (_requests(s3, f"big/{tag.name}/{file.name}", once),)
    })  # fmt: skip
    for file in sorted(tag.glob("*.pt")):
        got = _requests(s3, f"big/{tag.name}/{file.name}", since)
        assert got["whole"] == got["HEAD"] == 0
        # Four commands (inspect and validate --json, validate's text, validate), each fetching the
        # head and the tail (+ one GET where a record lies past them).
        assert got["GET"] <= 4 * 3 and got["bytes"] <= 4 * (HEAD_BYTES + TAIL_BYTES) < file.stat().st_size


def test_s3_single_file_requests(s3: S3) -> None:
    file = FIXTURES / "z3_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = _padded(file, 2 << 20)
    url = s3.put("one/" + file.name, data)
    since = _mark(s3)
    assert _document("validate", url, *_s3_options(s3))[0] == 0
    got = _requests(s3, "one/" + file.name, since)
    # Not a folder: the listing finds nothing under it (s3fs's find and isdir: 2 LISTs, and a HEAD of
    # the key find makes itself), then one info() of the object; then the 4 KiB sniff (is it
    # safetensors?) and the head and the tail.
    assert got["whole"] == 0 and got["HEAD"] <= 2 and got["GET"] <= 1 + 3
    assert got["bytes"] <= 4096 + 8 + HEAD_BYTES + TAIL_BYTES < len(data)
    assert _listings(s3, since) <= 2


# -- faults ------------------------------------------------------------------------------------------


def test_s3_missing_rank_is_the_local_copys_missing_file_problem(s3: S3, tmp_path: pathlib.Path) -> None:
    local = tmp_path / "z2"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", local)
    missing = local / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    url = _s3_copy(s3, local, "z2")
    s3.fs.rm(f"{s3.bucket}/z2/global_step3/{missing.name}")
    missing.unlink()
    _same_report(local, url, options=_s3_options(s3))
    tags = _document("validate", url, *_s3_options(s3))[1]["tags"]
    codes = {(p["code"], p["file"]) for t in tags for p in t["problems"]}
    assert ("missing-rank", f"{url}/global_step3/{missing.name}") in codes


def test_s3_truncated_object_is_the_local_copys_corruption_problem(s3: S3, tmp_path: pathlib.Path) -> None:
    local = tmp_path / "z2"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", local)
    cut = local / "global_step3" / "mp_rank_00_model_states.pt"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    url = _s3_copy(s3, local, "z2")
    _same_report(local, url, options=_s3_options(s3))
    problems = [p for t in _document("validate", url, *_s3_options(s3))[1]["tags"] for p in t["problems"]]
    named = [p for p in problems if p["file"] == f"{url}/global_step3/{cut.name}" and p["severity"] == "error"]
    assert named and named[0]["code"] == "unreadable-file"


def test_s3_object_replaced_after_the_listing_is_refused_as_changed(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FIXTURES / "z2_bf16_ws2" / "global_step3"
    url = _s3_copy(s3, folder, "tag")
    victim = "mp_rank_00_model_states.pt"
    listed = _source.list_remote

    def list_then_replace(where: str, storage_options: Any = None) -> _source.RemoteFolder:
        listing = listed(where, storage_options)
        s3.put(f"tag/{victim}", (folder / victim).read_bytes() + b"\0")  # a new version, after the listing
        return listing

    for module in _modules_listing():
        monkeypatch.setattr(module, "list_remote", list_then_replace)
    status, document = _document("validate", url, *_s3_options(s3))
    assert status == 1
    problems = [p for t in document["tags"] for p in t["problems"] if p["file"] == f"{url}/{victim}"]
    assert problems and problems[0]["code"] == "unreadable-file"
    assert "changed while being read" in problems[0]["message"]


def _modules_listing() -> Iterator[Any]:
    """The modules that list a remote folder (each imported ``list_remote`` by name)."""
    from ckptkeys._check import _entry, _layout, _runs, _weights_folders

    yield from (_entry, _layout, _runs, _weights_folders)


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_s3_missing_bucket_or_prefix_is_one_line_exit_2(s3: S3, command: str) -> None:
    options = _s3_options(s3)
    for url in (f"s3://{s3.bucket}-absent/run", f"s3://{s3.bucket}/no/such/prefix"):
        status, out, err = _run(command, url, *options)
        assert status == 2 and out == ""
        assert err.count("\n") == 1 and url in err, err


def test_bad_storage_options_are_a_usage_error(tmp_path: pathlib.Path) -> None:
    status, out, err = _run("validate", str(FIXTURES / "z2_bf16_ws2"), "--storage-options", "anon=true")
    assert status == 2 and err.count("\n") == 1 and "not to the local path" in err
    status, out, err = _run("inspect", "memory://x", "--storage-options", "{not json")
    assert status == 2 and err.count("\n") == 1 and "not a JSON object" in err

