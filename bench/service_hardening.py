"""Service hardening figures (issue 21), one run each, against real ``rsir serve`` processes:

- ``health``: ``/healthz`` latency while a burst of explain overlays (``size=1024``, distinct
  queries, so nothing is cached) is drawn; ``--repo`` points at another checkout (e.g. the old code
  in /work/main) to measure it the same way.
- ``redis``: the latency each text search adds while Redis accepts connections but never answers (a
  local socket that never replies), by request number: before and after the circuit breaker opens,
  against the same server with no Redis configured; with API keys, so the rate limiter asks too.
- ``sign``: the in-process cost of signing one response's result URLs (10 hits), the work keys add
  to every answer besides the key check.
- ``keys``: text-search throughput (closed loop, ``--clients`` threads) with API keys off and on
  (on: the key check, the rate-limit count and the signing of every result URL), for cache hits
  and cache misses.

    python -m bench.service_hardening --index /tmp/h21/bench-index health [--repo /work/main]
    python -m bench.service_hardening --index /tmp/h21/bench-index redis [--repo /work/main]
    python -m bench.service_hardening --index /tmp/h21/bench-index keys
    python -m bench.service_hardening --index /tmp/h21/bench-index sign

Prints one JSON object per scenario (and appends it to bench/results/service_hardening.jsonl).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "service_hardening.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(index: Path, repo: Path, env: dict[str, str]) -> Iterator[str]:
    """``rsir serve`` from ``repo`` (its code on PYTHONPATH) until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RSIR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsir", "serve", "--index", str(index), "--port", str(port)],
        env={**clean, "PYTHONPATH": str(repo), "RSIR_LOG_LEVEL": "warning", "RSIR_DEVICE": "cpu", **env},
        cwd=repo,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rsir serve exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("rsir serve not ready in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ids(url: str, headers: dict[str, str]) -> list[str]:
    body = httpx.post(
        f"{url}/search/text", json={"query": "harbour", "k": 50}, headers=headers, timeout=60
    ).json()
    return [hit["id"] for hit in body["results"]]


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.quantile(a, 0.5)), 2),
        "p99_ms": round(float(np.quantile(a, 0.99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


def health(index: Path, repo: Path, threads: int, per_thread: int) -> dict[str, Any]:
    with serving(index, repo, {"RSIR_MAX_INFLIGHT": "256"}) as url:
        ids = _ids(url, {})
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not done.is_set():
                    t0 = time.perf_counter()
                    c.get("/healthz")
                    probes.append(time.perf_counter() - t0)
                    time.sleep(0.01)

        statuses: list[int] = []

        def burst(w: int) -> None:
            with httpx.Client(base_url=url, timeout=300) as c:
                for n in range(per_thread):
                    r = c.get(
                        f"/images/{ids[(w * per_thread + n) % len(ids)]}/explain.png",
                        params={"query": f"planes near the terminal {w} {n}", "size": 1024},
                    )
                    statuses.append(r.status_code)

        idle: list[float] = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(100):
                t0 = time.perf_counter()
                c.get("/healthz")
                idle.append(time.perf_counter() - t0)
        prober = threading.Thread(target=probe)
        prober.start()
        started = time.perf_counter()
        workers = [threading.Thread(target=burst, args=(w,)) for w in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        seconds = time.perf_counter() - started
        done.set()
        prober.join()
    return {
        "scenario": "health",
        "repo": str(repo),
        "burst": f"{threads} threads x {per_thread} explain.png size=1024",
        "burst_s": round(seconds, 2),
        "overlays_ok": statuses.count(200),
        "healthz_idle": _ms(idle),
        "healthz_during_burst": _ms(probes),
    }


class _Hung:
    """Accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])


def _sequential(url: str, n: int, headers: dict[str, str], tag: str) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/search/text", json={"query": f"{tag} query number {i}", "k": 10}, headers=headers)
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return out


def redis(index: Path, repo: Path, n: int) -> dict[str, Any]:
    hung = _Hung()
    keys = {"RSIR_API_KEYS": json.dumps({"bench": 100000})}
    headers = {"X-API-Key": "bench"}
    base: list[float] = []
    # The baseline (no Redis: every request a miss, as during the outage) is taken before and after
    # the outage run, so a change in the machine's load shows as a spread, not as "added" latency.
    for phase in ("before", "after"):
        if phase == "after":
            with serving(index, repo, {**keys, "RSIR_REDIS_URL": f"redis://127.0.0.1:{hung.port}/0"}) as url:
                outage = _sequential(url, n, headers, "hung")
        with serving(index, repo, {**keys, "RSIR_CACHE_LRU_ENTRIES": "0"}) as url:
            _sequential(url, 5, headers, f"warm {phase}")
            base += _sequential(url, n, headers, f"base {phase}")
    median_base = statistics.median(base)
    after = [t * 1000 for t in outage[3:]]
    return {
        "scenario": "redis",
        "repo": str(repo),
        "redis_timeout_ms": 100,
        "baseline_ms_median_p10_p90": [
            round(median_base * 1000, 1),
            round(float(np.quantile(base, 0.1)) * 1000, 1),
            round(float(np.quantile(base, 0.9)) * 1000, 1),
        ],
        "hung_ms_requests_1_to_3": [round(t * 1000, 1) for t in outage[:3]],
        "hung_ms_requests_4_on_median_max": [round(statistics.median(after), 1), round(max(after), 1)],
        "added_ms_request_1": round((outage[0] - median_base) * 1000, 1),
        "added_ms_median_requests_4_on": round(statistics.median(after) - median_base * 1000, 1),
    }


def _closed_loop(url: str, headers: dict[str, str], queries: str, clients: int, seconds: float) -> int:
    """Requests answered by ``clients`` threads, each sending its next search when one returns."""
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def loop(w: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.perf_counter() < stop:
                q = (
                    "planes near the terminal"
                    if queries == "hits"
                    else f"unseen {time.perf_counter_ns()} {w}"
                )
                r = c.post("/search/text", json={"query": q, "k": 10}, headers=headers)
                assert r.status_code == 200, r.text
                done[w] += 1

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def keys(index: Path, repo: Path, clients: int, seconds: float, rounds: int = 4) -> dict[str, Any]:
    """Both servers run at once and take turns (``rounds`` alternating slices of ``seconds``), so a
    change in the machine's load hits both alike."""
    out: dict[str, Any] = {"scenario": "keys", "repo": str(repo), "clients": clients, "seconds": seconds}
    on_env = {"RSIR_API_KEYS": json.dumps({"limited": 10**9})}
    with serving(index, repo, {}) as off_url, serving(index, repo, on_env) as on_url:
        setups = {"off": (off_url, {}), "on": (on_url, {"X-API-Key": "limited"})}
        for queries in ("hits", "misses"):
            answered = {"off": 0, "on": 0}
            for _ in range(rounds):
                for label, (url, headers) in setups.items():
                    answered[label] += _closed_loop(url, headers, queries, clients, seconds / rounds)
            for label in setups:
                out[f"{label}_{queries}_rps"] = round(answered[label] / seconds, 1)
            out[f"on_over_off_{queries}"] = round(answered["on"] / answered["off"], 3)
    return out


def sign(repeats: int = 20_000) -> dict[str, Any]:
    from rsir.service.schemas import ImageHit
    from rsir.service.signing import UrlSigner, sign_results

    signer = UrlSigner(b"\0" * 32, 900)
    hits = [
        ImageHit(
            rank=i + 1,
            id=f"images/synth_{i:06d}.png",
            score=0.5,
            coarse_score=0.5,
            fine_score=None,
            metadata={},
            image_url=f"/images/images/synth_{i:06d}.png",
            thumbnail_url=f"/images/images/synth_{i:06d}.png/thumbnail",
        )
        for i in range(10)
    ]
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            sign_results(hits, signer, "0123456789abcdef")
        runs.append((time.perf_counter() - t0) / repeats)
    return {
        "scenario": "sign",
        "us_per_10_hit_response_best_median": [
            round(min(runs) * 1e6, 1),
            round(statistics.median(runs) * 1e6, 1),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="checkout whose code serves (default: this one)"
    )
    parser.add_argument("scenario", choices=("health", "redis", "keys", "sign"))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=6)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.scenario == "health":
        result = health(args.index, args.repo, args.threads, args.per_thread)
    elif args.scenario == "redis":
        result = redis(args.index, args.repo, args.requests)
    elif args.scenario == "keys":
        result = keys(args.index, args.repo, args.clients, args.seconds)
    else:
        result = sign()
    result["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
