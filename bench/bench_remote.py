"""Benchmark: requests and bytes of ``ckptkeys.read`` of an ``s3://`` checkpoint, against s3fs file objects.

Run: ``python bench/bench_remote.py [--checkpoint DIR]`` (needs the test extra's moto, flask,
flask-cors and s3fs). It starts moto's S3 server on 127.0.0.1 behind a WSGI wrapper that logs
every request, uploads each ``.pt`` of ``--checkpoint`` (default: the ~1 GB ZeRO-2 tag
``bench/bench_reader.py`` makes under ``bench/_work/reader``, else a small fixture tag), and reads
each file three ways, counting at the server the GETs, HEADs and body bytes sent:

* ``ckptkeys.read(url)``: one ``info`` (HEAD), then ranged GETs of the head and tail;
* the same zip reader on an s3fs file object with s3fs's defaults (``fs.open``: 50 MiB blocks,
  read-ahead cache), the naive way to read a remote file partially;
* the same with ``cache_type="none"`` (one GET per read call).

Request counts and bytes, not times: moto's latency is not a store's. Figures are printed, never
asserted (``tests/test_remote.py`` asserts the counts on the fixtures).
"""

from __future__ import annotations

import argparse
import pathlib
import pprint
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "bench"))

import moto_server  # noqa: E402

import ckptkeys  # noqa: E402
from ckptkeys._read._limits import Limits  # noqa: E402
from ckptkeys._read._reader import _read_zip  # noqa: E402

BIG = ROOT / "bench/_work/reader/deepspeed/global_step1"
SMALL = ROOT / "tests/data/fixtures/z2_bf16_ws2/global_step3"


class Counter:
    """WSGI wrapper: (method, path, range header, body bytes sent) of every request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, str, str | None, int]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = list(self.app(environ, start_response))
        with self.lock:
            self.log.append(
                (
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("HTTP_RANGE"),
                    sum(len(chunk) for chunk in body),
                )
            )
        return body

    def since(self, mark: int, key: str) -> tuple[int, int, int]:
        with self.lock:
            mine = [entry for entry in self.log[mark:] if entry[1] == key]
        gets = [entry for entry in mine if entry[0] == "GET"]
        return len(gets), sum(entry[0] == "HEAD" for entry in mine), sum(entry[3] for entry in gets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=pathlib.Path, default=BIG if BIG.is_dir() else SMALL)
    args = parser.parse_args()
    import s3fs

    server, counter, endpoint = moto_server.start(Counter)
    options = {"endpoint_url": endpoint}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    files = sorted(args.checkpoint.glob("*.pt"))
    for path in files:
        fs.put_file(str(path), f"bench/{path.parent.name}/{path.name}")
    total_bytes = sum(p.stat().st_size for p in files)
    print(f"{args.checkpoint}: {len(files)} files, {total_bytes:,} bytes, moto at {endpoint}")
    print(f"{'file':<52} {'strategy':<28} {'GETs':>5} {'HEADs':>5} {'bytes':>13}")
    totals: dict[str, list[int]] = {}
    strategies = {
        "ckptkeys.read (ranged GETs)": None,
        "s3fs fs.open() defaults": {},
        "s3fs cache_type='none'": {"cache_type": "none"},
    }
    for path in files:
        key = f"/bench/{path.parent.name}/{path.name}"
        local = pprint.pformat(ckptkeys.read(path).data)
        for label, open_options in strategies.items():
            fs.invalidate_cache()
            mark = len(counter.log)
            same = pprint.pformat(_read(fs, path, options, open_options)) == local
            gets, heads, sent = counter.since(mark, key)
            total = totals.setdefault(label, [0, 0, 0])
            total[0] += gets
            total[1] += heads
            total[2] += sent
            note = "" if same else "  (differs from the local read!)"
            print(f"{path.name:<52} {label:<28} {gets:>5} {heads:>5} {sent:>13,}{note}")
    for label, (gets, heads, sent) in totals.items():
        print(f"{'all files':<52} {label:<28} {gets:>5} {heads:>5} {sent:>13,}")
    _inspect(counter, options, files)
    server.stop()


def _inspect(counter: Counter, options: dict[str, Any], files: list[pathlib.Path]) -> None:
    """``ckptkeys inspect s3://bench/TAG --json`` (the uploaded tag folder): the requests
    the whole command makes, per ``.pt`` and in all, and whether its document is the local one's."""
    import contextlib
    import io
    import json

    from ckptkeys._cli._main import main as command

    def document(target: str, *more: str) -> dict[str, Any]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            command(["inspect", target, "--json", "--quiet", *more])
        found: dict[str, Any] = json.loads(out.getvalue().replace(target.rstrip("/"), "ROOT"))
        return found

    tag = files[0].parent.name
    mark = len(counter.log)
    remote = document(f"s3://bench/{tag}", "--storage-options", json.dumps(options))
    with counter.lock:
        log = counter.log[mark:]
    print(f"\nckptkeys inspect s3://bench/{tag} --json (the tag folder):")
    for path in files:
        mine = [entry for entry in log if entry[1] == f"/bench/{tag}/{path.name}"]
        gets = [entry for entry in mine if entry[0] == "GET"]
        heads = sum(entry[0] == "HEAD" for entry in mine)
        whole = sum(entry[2] is None for entry in gets)
        print(f"  {path.name:<50} {len(gets)} GETs ({whole} whole), {heads} HEADs, {sum(e[3] for e in gets):,} bytes")
    lists = sum(entry[0] == "GET" and entry[1].strip("/") == "bench" for entry in log)
    print(f"  all: {len(log)} requests ({lists} LIST), {sum(e[3] for e in log if e[0] == 'GET'):,} bytes")
    folder = files[0].parent
    if sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in files):
        same = remote == document(str(folder))
        print(f"  the document {'equals' if same else 'DIFFERS FROM'} the local folder's (paths aside)")


def _read(fs: Any, path: pathlib.Path, options: dict[str, Any], open_options: dict[str, Any] | None) -> Any:
    """The structure of the uploaded copy of ``path``: by ``ckptkeys.read`` of its URL (``open_options``
    None), or by the same zip reader on an s3fs file object opened with ``open_options``."""
    if open_options is None:
        return ckptkeys.read(f"s3://bench/{path.parent.name}/{path.name}", storage_options=options).data
    with fs.open(f"bench/{path.parent.name}/{path.name}", "rb", **open_options) as stream:
        return _read_zip(str(path), stream, path.stat().st_size, Limits()).data


if __name__ == "__main__":
    main()
