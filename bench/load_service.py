"""Load benchmark of the HTTP service (Locust, headless) in three configurations, one run each:
batching off / on without a cache, and batching on with the Redis cache.

    python -m bench.load_service --index data/index20k --users 16 --time 30s

Each configuration gets a fresh server process (``rsir serve``) on the same index and the same
text-only query stream (real RS captions when ../shared/data is present; ``--repeat`` of them from a
hot set of 50). Results: ``bench/results/load_service.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from rsir.loadtest.queries import load_queries
from rsir.loadtest.run import run as locust_run

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, float]:
    """Cache outcomes and the mean batch size from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for outcome in ("hit", "miss", "error"):
        m = re.search(rf'^rsir_cache_total{{result="{outcome}"}} ([0-9.e+]+)$', text, re.M)
        out[f"cache_{outcome}"] = float(m.group(1)) if m else 0.0
    count = re.search(r'^rsir_batch_size_count{kind="text"} ([0-9.e+]+)$', text, re.M)
    total = re.search(r'^rsir_batch_size_sum{kind="text"} ([0-9.e+]+)$', text, re.M)
    if count and total and float(count.group(1)) > 0:
        out["mean_batch"] = float(total.group(1)) / float(count.group(1))
    return out


def serve(index: Path, env: dict[str, str], timeout_s: float = 120) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsir", "serve", "--index", str(index), "--port", str(port)],
        env={**os.environ, "RSIR_LOG_LEVEL": "warning", **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not become ready in {timeout_s:.0f} s")


def server_memory(pid: int) -> dict[str, float]:
    """The server's resident memory after the run, MiB: peak, now, private (anon) and mapped files."""
    keys = {"VmHWM": "server_peak_rss_mib", "VmRSS": "server_rss_mib", "RssAnon": "server_anon_mib",
            "RssFile": "server_file_mib"}  # fmt: skip
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[keys[key]] = round(int(value.split()[0]) / 1024, 1)
    return out


def profile(url: str, queries: list[str], k: int = 10) -> dict[str, float]:
    """Where one request's time goes, unloaded: the engine's stages (``timings_ms``) averaged over
    ``queries`` sent one at a time, and the rest of the round trip (HTTP, validation, JSON) beside it."""
    sums: dict[str, float] = {}
    for q in queries:
        t0 = time.perf_counter()
        body = httpx.post(f"{url}/search/text", json={"query": q, "k": k}, timeout=60).json()
        total = 1000 * (time.perf_counter() - t0)
        stages = {f"{name}_ms": float(v) for name, v in body.get("timings_ms", {}).items()}
        stages["round_trip_ms"] = total
        stages["outside_engine_ms"] = total - float(body.get("timings_ms", {}).get("total", 0.0))
        for name, v in stages.items():
            sums[name] = sums.get(name, 0.0) + v
    return {name: round(v / len(queries), 2) for name, v in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--time", default="30s")
    p.add_argument("--repeat", type=float, default=0.5)
    p.add_argument("--queries", type=Path, default=None)
    p.add_argument("--batch-max", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load_service.json")
    p.add_argument(
        "--configs", default="off,on,redis", help="which runs: a comma list of off, on (batching), redis"
    )
    p.add_argument("--profile", type=int, default=0, help="after each run, this many timed single queries")
    args = p.parse_args()

    no_cache = {"RSIR_CACHE_LRU_ENTRIES": "0"}
    batching = {"RSIR_BATCH_MAX": str(args.batch_max), "RSIR_BATCH_WAIT_MS": str(args.batch_wait_ms)}
    every: dict[str, tuple[str, dict[str, str]]] = {
        "off": ("batching off, no cache", {**no_cache, "RSIR_BATCH_MAX": "1"}),
        "on": ("batching on, no cache", {**no_cache, **batching}),
        "redis": ("batching on, Redis cache", {**batching, "RSIR_REDIS_URL": args.redis_url}),
    }
    configs = [every[c] for c in args.configs.split(",") if c]
    load_env = {"RSIR_LOAD_REPEAT": str(args.repeat), "RSIR_LOAD_MIX": "text"}
    if args.queries:
        load_env["RSIR_LOAD_QUERIES"] = str(args.queries.resolve())
    rows: list[dict[str, Any]] = []
    for name, env in configs:
        if "RSIR_REDIS_URL" in env:
            redis.Redis.from_url(args.redis_url).flushdb()
        proc, url = serve(args.index, env)
        try:
            for _ in range(5):  # warm-up: first calls pay for lazy initialisation
                httpx.post(f"{url}/search/text", json={"query": "warm up the model", "k": 10}, timeout=60)
            folder = REPO / "logs" / "load" / name.replace(" ", "_").replace(",", "")
            summary = locust_run(url, args.users, args.time, folder, env=load_env)
            agg = summary["Aggregated"]
            row = {"config": name, **agg, **scrape(url), **server_memory(proc.pid)}
            if args.profile:
                texts = load_queries(Path(load_env.get("RSIR_LOAD_QUERIES", REPO.parent / "shared" / "data")))
                row["profile"] = profile(url, texts[: args.profile])
            rows.append(row)
            print(f"{name}: {agg} {row.get('profile', '')}", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    info = {
        "index": str(args.index),
        "users": args.users,
        "time": args.time,
        "repeat": args.repeat,
        "batch_max": args.batch_max,
        "batch_wait_ms": args.batch_wait_ms,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    args.out.write_text(json.dumps(info, indent=1))
    print("| config | requests | failures | req/s | p50 ms | p95 ms | p99 ms | mean batch | cache hits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['requests']} | {r['failures']} | {r['rps']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r.get('mean_batch', 0):.2f} | {int(r['cache_hit'])} |"
        )


if __name__ == "__main__":
    main()
