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


def serve(index: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsir", "serve", "--index", str(index), "--port", str(port)],
        env={**os.environ, "RSIR_LOG_LEVEL": "warning", **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become ready in 120 s")


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
    args = p.parse_args()

    no_cache = {"RSIR_CACHE_LRU_ENTRIES": "0"}
    batching = {"RSIR_BATCH_MAX": str(args.batch_max), "RSIR_BATCH_WAIT_MS": str(args.batch_wait_ms)}
    configs: list[tuple[str, dict[str, str]]] = [
        ("batching off, no cache", {**no_cache, "RSIR_BATCH_MAX": "1"}),
        ("batching on, no cache", {**no_cache, **batching}),
        ("batching on, Redis cache", {**batching, "RSIR_REDIS_URL": args.redis_url}),
    ]
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
            rows.append({"config": name, **agg, **scrape(url)})
            print(f"{name}: {agg}", file=sys.stderr)
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
