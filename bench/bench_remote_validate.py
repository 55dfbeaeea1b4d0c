"""Benchmark: validating a 256- and 1,024-rank ZeRO-2 tag in S3, against downloading its files.

Run: ``python bench/bench_remote_validate.py [--ranks 256 1024] [--runs 3]`` (needs torch and
DeepSpeed to build the tags once, and the test extra's moto, flask, flask-cors and s3fs). Each tag is
a ZeRO-2 bf16 tag as DeepSpeed names it (``mp_rank_00_model_states.pt`` and one
``bf16_zero_pp_rank_K_mp_rank_00_optim_states.pt`` per rank), every file written by ``torch.save``
of a dict shaped like the fixture ``z2_bf16_ws2``'s (its pickles: DeepSpeed's classes, the
optimizer's param groups and slice mappings), with ``dp_world_size``, ``partition_count`` and
``param_shapes`` scaled to the rank count and small fp32 partitions (``--numel`` elements a rank;
cached under ``bench/_work/remote_validate/``). The tags are uploaded to moto's S3 server on
127.0.0.1, behind a WSGI wrapper that counts every request, and each way of checking them runs
in a fresh interpreter (``--runs`` times, the median kept):

* ``ckptkeys``: ``ckptkeys.validate_tag(url)``: ``scan(url, read=True)`` (one listing, each
  file's head and tail by ranged GETs) and validate's checks of the tag;
* ``s3fs file by file``: each ``.pt`` of the listing downloaded with s3fs's defaults
  (``fs.open(path).read()``, one after another), nothing loaded;
* ``s3fs fs.cat``: the same files in one ``fs.cat(paths)`` (s3fs's own concurrent batch).

``--latency-ms`` and ``--mbps`` make the server answer as a store over a network does (a wait before
each answer, a bandwidth per connection); by default it answers at loopback speed, where moto's own
Python (a few ms of CPU per request, on the same cores as the client) is what is measured.

Printed: wall time, requests per file (GET/HEAD/LIST at the server), bytes received, peak RSS
(``VmHWM``) and CPU time of the child, the CPU time moto's server spent answering it, and the
ratios; ``--src`` measures another tree (a before), ``--pool`` sets botocore's connection pool.
Never asserted: moto's latency on loopback is not a store's, and the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import moto_server  # noqa: E402

FIXTURE = ROOT / "tests/data/fixtures/z2_bf16_ws2/global_step3"
WORK = ROOT / "bench/_work/remote_validate"
TAG = "global_step1"

CHILD = """
import json, os, sys, time
how, url, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
start = time.perf_counter()
if how == "ckptkeys":
    import ckptkeys
    report = ckptkeys.validate_tag(url, storage_options=options)
    files, problems, unread = len(report.layout.files), len(report.problems), len(report.layout.read_errors)
else:
    import s3fs
    fs = s3fs.S3FileSystem(**options)
    paths = sorted(p for p in fs.find(url) if p.endswith(".pt"))
    if how == "file by file":
        received = 0
        for path in paths:
            with fs.open(path, "rb") as stream:
                received += len(stream.read())
    else:
        received = sum(map(len, fs.cat(paths).values()))
    files, problems, unread = len(paths), received, 0
elapsed = time.perf_counter() - start
cpu = sum(os.times()[:2])
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak (moto, torch) into ru_maxrss
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps([elapsed, peak, cpu, files, problems, unread]))
"""

STRATEGIES = ("ckptkeys", "file by file", "fs.cat")


def build_tag(ranks: int, numel: int) -> pathlib.Path:
    """A ZeRO-2 bf16 tag of ``ranks`` optimizer shards shaped like the fixture's, made once with torch."""
    folder = WORK / f"ranks_{ranks}_numel_{numel}"
    done = folder / "done"
    if done.exists():
        return folder
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import collections

    import torch

    tag = folder / TAG
    tag.mkdir(parents=True, exist_ok=True)
    model = torch.load(FIXTURE / "mp_rank_00_model_states.pt", weights_only=False)
    shard = torch.load(FIXTURE / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", weights_only=False)
    total = ranks * numel
    # One param group of total elements: emb.weight takes what the fixture's other parameters leave.
    shapes = collections.OrderedDict(model["param_shapes"][0])
    rest = sum(torch.Size(s).numel() for name, s in shapes.items() if name != "emb.weight")
    shapes["emb.weight"] = torch.Size([total - rest])
    model["param_shapes"] = [shapes]
    model["dp_world_size"] = ranks
    model["module"]["emb.weight"] = torch.zeros(total - rest, dtype=torch.bfloat16)
    torch.save(model, tag / "mp_rank_00_model_states.pt")
    inner = shard["optimizer_state_dict"]
    inner["partition_count"] = [ranks]
    inner["single_partition_of_fp32_groups"] = [torch.zeros(numel)]
    state = inner["base_optimizer_state"]["state"][0]
    state["exp_avg"], state["exp_avg_sq"] = torch.zeros(numel), torch.zeros(numel)
    for rank in range(ranks):
        torch.save(shard, tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text(TAG)
    done.write_text("")
    return folder


class Counter:
    """WSGI wrapper: (method, path, body bytes sent) of every request; with ``latency`` (seconds before
    each answer) and ``rate`` (bytes per second of each answer's body), a store's round trip and
    per-connection bandwidth, which loopback has not (moto's threads sleep, the answers overlap)."""

    def __init__(self, app: Any, latency: float = 0.0, rate: float = 0.0) -> None:
        self.app = app
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.latency = latency
        self.rate = rate

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = list(self.app(environ, start_response))
        sent = sum(map(len, body))
        if self.latency or self.rate:
            time.sleep(self.latency + (sent / self.rate if self.rate else 0.0))
        with self.lock:
            self.log.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), sent))
        return body

    def since(self, mark: int) -> dict[str, int]:
        with self.lock:
            entries = self.log[mark:]
        objects = [e for e in entries if e[1].count("/") > 1]  # /bucket/key, not /bucket (a LIST)
        return {
            "GET": sum(e[0] == "GET" for e in objects),
            "HEAD": sum(e[0] == "HEAD" for e in objects),
            "LIST": sum(e[0] == "GET" and e[1].count("/") <= 1 for e in entries),
            "bytes": sum(e[2] for e in objects if e[0] == "GET"),
        }


def measure(how: str, url: str, options: dict[str, Any], counter: Counter, runs: int, src: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    times, peaks, cpus, served = [], [], [], []
    requests: dict[str, int] = {}
    outcome: list[Any] = []
    for _ in range(runs):
        mark = len(counter.log)
        server = sum(os.times()[:2])  # this process is moto's server: its CPU is the requests' cost
        out = subprocess.run(
            [sys.executable, "-c", CHILD, how, url, json.dumps(options)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise SystemExit(f"{how} failed:\n{out.stderr}")
        outcome = json.loads(out.stdout.splitlines()[-1])
        times.append(outcome[0])
        peaks.append(outcome[1])
        cpus.append(outcome[2])
        served.append(sum(os.times()[:2]) - server)
        requests = counter.since(mark)
    return {
        "time": statistics.median(times),
        "peak": max(peaks),
        "cpu": statistics.median(cpus),
        "server": statistics.median(served),
        "files": outcome[3],
        "extra": outcome[4:],
        **requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--numel", type=int, default=144, help="fp32 elements of each rank's partition")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each answer (a store's round trip)")
    parser.add_argument("--mbps", type=float, default=0.0, help="MB/s of each answer (a connection's bandwidth)")
    parser.add_argument("--pool", type=int, help="botocore's max_pool_connections (config_kwargs; 10 by default)")
    parser.add_argument("--ways", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--src", default=str(ROOT / "src"), help="the ckptkeys tree to measure (a before/after)")
    args = parser.parse_args()
    import s3fs

    folders = {ranks: build_tag(ranks, args.numel) for ranks in args.ranks}
    # The uploads at loopback speed; the store's latency for the reads (counter.latency, .rate).
    server, counter, endpoint = moto_server.start(Counter)
    options: dict[str, Any] = {"endpoint_url": endpoint}
    fs = s3fs.S3FileSystem(**options)
    if args.pool:  # the ways measured get it, the uploads not
        options["config_kwargs"] = {"max_pool_connections": args.pool}
    fs.mkdir("bench")
    store = "loopback"
    if args.latency_ms or args.mbps:
        store = f"{args.latency_ms:g} ms before each answer, {args.mbps:g} MB/s each"
    if args.pool:
        store += f", {args.pool} connections a client"
    print(f"moto at {endpoint} ({store}); {args.runs} runs each, the median time; peak RSS of the child")
    columns = f"{'time s':>8} {'GET/f':>6} {'HEAD/f':>6} {'LIST':>4} {'bytes':>13} {'RSS MB':>7} {'CPU s':>6}"
    columns += f" {'moto s':>6}"
    print(f"{'ranks':>5} {'way':<14} {columns}")
    for ranks, folder in folders.items():
        prefix = f"bench/ranks_{ranks}"
        fs.put(str(folder / TAG), f"{prefix}/{TAG}", recursive=True)
        url = f"s3://{prefix}/{TAG}"
        counter.latency, counter.rate = args.latency_ms / 1000, args.mbps * 1e6
        results = {how: measure(how, url, options, counter, args.runs, args.src) for how in args.ways}
        counter.latency = counter.rate = 0.0
        for how, got in results.items():
            files = got["files"]
            print(
                f"{ranks:>5} {how:<14} {got['time']:>8.2f} {got['GET'] / files:>6.2f} {got['HEAD'] / files:>6.2f} "
                f"{got['LIST']:>4} {got['bytes']:>13,} {got['peak'] / 1024:>7.1f} {got['cpu']:>6.2f} "
                f"{got['server']:>6.2f}"
            )
        mine = results.get("ckptkeys")
        if mine is None:
            continue
        print(f"{'':>5} ckptkeys: {mine['files']} files, {mine['extra'][0]} problems, {mine['extra'][1]} unreadable")
        for how in [way for way in results if way != "ckptkeys"]:
            print(f"{'':>5} ckptkeys is {results[how]['time'] / mine['time']:.1f}x faster than s3fs {how}")
    server.stop()


if __name__ == "__main__":
    main()
