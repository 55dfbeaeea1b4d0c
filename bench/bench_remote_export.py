"""Benchmark: ``ckptkeys export s3://...`` against ``s3fs get`` of the tag then a local ``ckptkeys export``.

Run: ``python bench/bench_remote_export.py [--save DIR ...]`` (needs torch for the synthetic saves,
and the test extra's moto, flask, flask-cors and s3fs). It starts moto's S3 server on 127.0.0.1,
uploads each save folder (default: a synthetic ZeRO-2 save of ~250 MB, written with torch under
``bench/_work/remote_export``, and the ~1 GB save ``bench/bench_reader.py`` makes under
``bench/_work/reader/deepspeed``, else a synthetic one of the same size), and times, each in fresh
processes:

* ``ckptkeys export s3://bench/<save> OUT --storage-options endpoint_url=...``: the plan from the
  listing and ranged reads, the fp32 masters' byte ranges fetched (8 GETs of at most 4 MiB ahead);
* ``s3fs`` ``fs.get(<save>, DIR, recursive=True)`` (every byte of every file), then
  ``ckptkeys export DIR OUT`` (the local export: ``copy_file_range``).

It prints the wall times, their ratio (target: the remote export at least 2x faster) and the peak
RSS of the ckptkeys process (target: under 150 MB, and flat: the same for both sizes). Moto on
loopback is not a real store: the ratio says what fetching less costs, not a network's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import moto_server  # noqa: E402

WORK = ROOT / "bench/_work/remote_export"
READER_SAVE = ROOT / "bench/_work/reader/deepspeed"

SYNTHETIC = """
import pathlib, sys
sys.path.insert(0, sys.argv[1])
import bench_reader
hidden, ffn, layers, vocab = (int(v) for v in sys.argv[3:7])
def shapes():
    out = [("0.weight", (vocab, hidden))]
    for layer in range(layers):
        up, down = 1 + 3 * layer, 3 + 3 * layer
        out += [(f"{up}.weight", (ffn, hidden)), (f"{up}.bias", (ffn,))]
        out += [(f"{down}.weight", (hidden, ffn)), (f"{down}.bias", (hidden,))]
    return out
bench_reader.parameter_shapes = shapes
bench_reader.generate_synthetic(pathlib.Path(sys.argv[2]))
"""


def synthetic_save(name: str, layers: int) -> pathlib.Path:
    """A ZeRO-2 bf16 save written with torch (bench_reader's synthetic layout), of ``layers`` FFN layers
    (1024 x 4096 each, and an 8,000 x 1024 embedding): 12 bytes per parameter on disk."""
    save = WORK / name
    if not (save / "latest").is_file():
        shutil.rmtree(save, ignore_errors=True)
        args = [str(ROOT / "bench"), str(save), "1024", "4096", str(layers), "8000"]
        subprocess.run([sys.executable, "-c", SYNTHETIC, *args], check=True)
    return save


# The command in a fresh process that prints its own peak RSS (VmHWM: its own memory only; a
# child's ru_maxrss would start from the parent's at fork).
CKPTKEYS = """
import sys
from ckptkeys._cli import main
try:
    code = main(sys.argv[1:])
finally:
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    print(peak[0].split()[1] if peak else "0", file=sys.stderr)
sys.exit(code)
"""


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB; 0 where not printed) of one fresh process."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    last = done.stderr.strip().splitlines()[-1:] or ["0"]
    return seconds, int(last[0]) if last[0].isdigit() else 0


# moto serves a ranged GET by reading the whole object and slicing it (moto/s3/models.py,
# FakeKey.value): 0.2 s for 1 MiB of a 250 MB object. With --ranged-moto the server's process
# first installs this patch, so that a ranged GET reads only its range, as S3 serves it (0.05 s
# for 1 MiB of a 200 MB object); whole GETs, ETags, If-Match and everything else are moto's own.
RANGED_MOTO = """import threading
from moto.s3 import models, responses

_local = threading.local()
_value = models.FakeKey.value.fget


class _Window:
    # A key's bytes, read only where sliced.

    def __init__(self, key):
        self.key = key

    def __len__(self):
        return self.key.contentsize

    def __getitem__(self, item):
        start, stop, _ = item.indices(len(self))
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))


def _lazy_value(self):
    return _Window(self) if getattr(_local, "ranged", False) else _value(self)


models.FakeKey.value = property(_lazy_value, models.FakeKey.value.fset)
_get = responses.S3Response._key_response_get


def _key_response_get(self, query, key_name):
    _local.ranged = bool(self.headers.get("range")) and "partNumber" not in query
    try:
        status, headers, body = _get(self, query, key_name)
    finally:
        _local.ranged = False
    return status, headers, body


responses.S3Response._key_response_get = _key_response_get
_handle = responses.S3Response._handle_range_header


def _handle_range_header(self, request, response_headers, response_content):
    status, headers, body = _handle(self, request, response_headers, response_content)
    if isinstance(body, _Window):
        body = body[0 : len(body)]
    return status, headers, body


responses.S3Response._handle_range_header = _handle_range_header
"""

GET = """
import sys, s3fs
fs = s3fs.S3FileSystem(endpoint_url=sys.argv[1])
fs.get(sys.argv[2], sys.argv[3], recursive=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def size_of(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=pathlib.Path, action="append", help="a save folder (repeatable)")
    parser.add_argument(
        "--ranged-moto", action="store_true", help="patch moto so that a ranged GET reads only its range (as S3)"
    )
    args = parser.parse_args()
    import s3fs

    WORK.mkdir(parents=True, exist_ok=True)
    saves: list[pathlib.Path] = args.save or [
        synthetic_save("synthetic_300mb", 2),
        READER_SAVE if (READER_SAVE / "latest").is_file() else synthetic_save("synthetic_1gb", 19),
    ]
    env = dict(os.environ)
    env.update(moto_server.CREDENTIALS, PYTHONPATH=str(ROOT / "src"))
    os.environ.update(env)
    port = free_port()
    # The server in a process of its own: it holds the uploads, and the processes measured are
    # not forked from it.
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (RANGED_MOTO if args.ranged_moto else "") + "\nfrom moto.server import main; main()",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    for _ in range(100):
        try:
            fs.mkdir("bench")
            break
        except Exception:
            time.sleep(0.2)
    cli = [sys.executable, "-c", CKPTKEYS]
    rows = []
    for i, save in enumerate(saves):
        prefix = f"bench/save{i}"
        for path in sorted(save.rglob("*")):
            if path.is_file() and (path.suffix == ".pt" or path.name == "latest"):
                fs.put_file(str(path), f"{prefix}/{path.relative_to(save)}")
        stored = sum(info["size"] for info in fs.find(prefix, detail=True).values())
        with tempfile.TemporaryDirectory(dir=WORK.parent) as scratch:
            work = pathlib.Path(scratch)
            url = f"s3://{prefix}"
            remote_s, remote_rss = run(
                [*cli, "export", url, str(work / "remote"), "-q", "--storage-options", f"endpoint_url={endpoint}"], env
            )
            get_s, _ = run([sys.executable, "-c", GET, endpoint, prefix, str(work / "copy")], env)
            local_s, local_rss = run([*cli, "export", str(work / "copy"), str(work / "local"), "-q"], env)
            same = all(
                (work / "remote" / p.name).read_bytes() == p.read_bytes() for p in (work / "local").iterdir()
            ) and sorted(os.listdir(work / "remote")) == sorted(os.listdir(work / "local"))
            out = size_of(work / "remote")
        rows.append(
            {
                "save": str(save),
                "stored_bytes": stored,
                "exported_bytes": out,
                "remote_export_s": round(remote_s, 2),
                "s3fs_get_s": round(get_s, 2),
                "local_export_s": round(local_s, 2),
                "ratio": round((get_s + local_s) / remote_s, 2),
                "remote_export_peak_rss_mb": round(remote_rss / 1024, 1),
                "local_export_peak_rss_mb": round(local_rss / 1024, 1),
                "byte_identical": same,
            }
        )
        fs.rm(prefix, recursive=True)
        print(json.dumps(rows[-1]), flush=True)
    server.terminate()
    server.wait()
    print()
    print(f"{'stored':>10} {'exported':>10} {'remote':>8} {'get+local':>10} {'ratio':>6} {'peak RSS':>9}  same")
    for row in rows:
        print(
            f"{row['stored_bytes'] / 1e6:>8.0f}MB {row['exported_bytes'] / 1e6:>8.0f}MB "
            f"{row['remote_export_s']:>7.2f}s {row['s3fs_get_s'] + row['local_export_s']:>9.2f}s "
            f"{row['ratio']:>5.2f}x {row['remote_export_peak_rss_mb']:>7.1f}MB  {row['byte_identical']}"
        )
    print(f"  moto: {'ranged GETs read only their range (--ranged-moto)' if args.ranged_moto else 'stock'}")
    print("  targets: ratio >= 2x; peak RSS of the remote export < 150 MB and flat in the save's size")


if __name__ == "__main__":
    main()
