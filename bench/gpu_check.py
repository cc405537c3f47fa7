"""The device check: the GPU paths measured against the CPU on the demo index, one JSON report.

    python -m bench.gpu_check --out "$OUT"        # or: make gpu-check (sets up the environment first)

Steps, each a key of ``gpu_check.json``:

- ``versions``: Python, torch (and its CUDA), FAISS (and the GPUs it sees), the GPU's name.
- ``gpu_tests``: the tests marked ``gpu`` (pytest over the files that carry the mark).
- ``build``: the demo archive (``rsir synth --n 1000 --seed 7``) indexed on the GPU and on the CPU,
  images/s each, and how far the two indexes' global vectors differ.
- ``topk``: 200 text -> image and 200 image -> captions queries (stored features of the CPU-built
  index, so only the scoring device differs) through the engine on the CPU in float32 and on the GPU
  in float16: how many top-10 lists are equal, and of those that are not, how many differ only where
  float32's own scores are closer than float16's resolution (a tie the GPU may order either way).
- ``rerank``: FTF pairs/s at K = 100 on the GPU in float16 and float32 (``bench.ftf_throughput``).
- ``load``: ``rsir serve`` on the GPU under 16 users for 60 s (Locust when installed, else a closed
  loop of httpx clients with the same text queries): requests/s, p50/p99, failures.

Without a GPU the CPU-side steps still run (``--dry-run-on-cpu`` runs the GPU side on the CPU too, to
test this script), every GPU
figure is null, the report says ``"gpu": false`` in words too, and the exit status is 2: CPU figures
are never reported as GPU ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
NO_GPU = "NO GPU FOUND: torch.cuda.is_available() is False; the GPU comparisons were not run"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "logs/gpu-check"))
    parser.add_argument("--n", type=int, default=1000, help="demo archive size")
    parser.add_argument("--queries", type=int, default=200, help="queries per direction for the top-10 check")
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--dry-run-on-cpu",
        action="store_true",
        help="without a GPU, run the GPU-side steps on the CPU to test this script (still exits 2)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    report: dict[str, Any] = {"gpu": gpu, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    report["versions"] = versions()
    _say(json.dumps(report["versions"]))
    # Where the "GPU" side runs: the GPU, or the CPU in a dry run of the script, or nowhere.
    target = "cuda" if gpu else ("cpu" if args.dry_run_on_cpu else None)
    report["target_device"] = target
    if not gpu:
        _say(NO_GPU + (" (dry run: the GPU-side steps run on the CPU)" if target else ""))
    work = args.work or Path(tempfile.mkdtemp(prefix="rsir-gpu-check-"))
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("gpu_tests", lambda: gpu_tests()),
        ("build", lambda: build(work, args.n, gpu)),
        ("topk", lambda: topk(work / "index-cpu", args.queries, target)),
        ("rerank", lambda: rerank(target)),
        ("load", lambda: load(work / "index-cpu", args.load_seconds, args.users, target)),
    ]
    failed = []
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            report[name] = step()
        except Exception as exc:  # one broken step must not hide the others' figures
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
        _say(f"{name}: {json.dumps(report[name])}")
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    report["status"] = "failed: " + ", ".join(failed) if failed else ("ok" if gpu else NO_GPU)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    _say(f"status: {report['status']} -> {args.out / 'gpu_check.json'}")
    sys.exit(0 if gpu and not failed else 2)


def versions() -> dict[str, Any]:
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "faiss": faiss.__version__,
        "faiss_gpus": int(gpus),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out |= {"gpu_name": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return out


def gpu_tests() -> dict[str, Any]:
    """pytest -m gpu over the test files that carry the mark (collecting the whole suite would import
    the browser and deployment tools, which a bare GPU machine does not have)."""
    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )
    proc = _run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files], check=False
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", summary)
    }
    return {"files": files, "summary": summary, "counts": counts, "rc": proc.returncode}


def build(work: Path, n: int, gpu: bool) -> dict[str, Any]:
    """The demo archive indexed on each device; images/s from the builder's own wall time."""
    data = work / "synth"
    if not (data / "dataset.json").is_file():
        workers = str(min(8, os.cpu_count() or 1))
        _rsir("synth", "--n", str(n), "--seed", "7", "--workers", workers, "--out", str(data))
    out: dict[str, Any] = {"images": n}
    for device in ("cpu", "cuda") if gpu else ("cpu",):
        index = work / f"index-{device}"
        shutil.rmtree(index, ignore_errors=True)  # a new index each run, so the build is timed whole
        t0 = time.perf_counter()
        _rsir("build-index", "--archive", str(data), "--out", str(index), "--device", device,
              "--metadata", str(data / "metadata.jsonl"))  # fmt: skip
        seconds = time.perf_counter() - t0
        out[device] = {"seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}
    if gpu:
        from rsir.index.versions import load_index

        a = load_index(work / "index-cpu", with_sgpd=False).gallery.vectors
        b = load_index(work / "index-cuda", with_sgpd=False).gallery.vectors
        cos = (np.asarray(a, np.float32) * np.asarray(b, np.float32)).sum(1)
        out["vector_cosine_min"] = round(float(cos.min()), 5)
        out["vector_cosine_mean"] = round(float(cos.mean()), 5)
    return out


def topk(index_path: Path, n_queries: int, target: str | None) -> dict[str, Any]:
    """Top-10 of the engine on the CPU (float32) against the GPU (float16) on the same stored features."""
    from rsir.index.versions import load_index
    from rsir.search.engine import QueryOptions, SearchEngine

    loaded = load_index(index_path, with_sgpd=False)
    gallery = loaded.gallery
    captions = gallery.captions
    assert captions is not None, "the demo index has captions"
    rng = np.random.default_rng(0)
    text_rows = np.sort(rng.choice(len(captions.texts), n_queries, replace=False)).astype(np.int64)
    image_rows = np.sort(rng.choice(len(gallery), n_queries, replace=False)).astype(np.int64)
    texts = gallery.caption_features(text_rows)
    images = gallery.image_features(image_rows)
    # k = 11: the 11th score says whether the 10th hit's place was a near-tie.
    text_opts = [QueryOptions(k=11, rerank="ftf")] * n_queries
    image_opts = [QueryOptions(k=11, rerank="ftf", target="captions")] * n_queries

    def run(device: str, dtype: str) -> tuple[list[Any], list[Any], float]:
        engine = SearchEngine.from_index(loaded, None, _engine_config(device, dtype))
        t0 = time.perf_counter()
        t = engine.search(texts, text_opts)
        i = engine.search(images, image_opts)
        return t, i, (time.perf_counter() - t0) * 1000 / (2 * n_queries)

    cpu_t, cpu_i, cpu_ms = run("cpu", "float32")
    out: dict[str, Any] = {"queries": n_queries, "cpu_float32_ms_per_query": round(cpu_ms, 3)}
    if target is None:
        out["gpu"] = None
        return out
    run(target, "float16")  # warm-up: CUDA context, kernels
    gpu_t, gpu_i, gpu_ms = run(target, "float16")
    resolution = float(torch.finfo(torch.float16).eps)
    out[f"{target}_float16_ms_per_query"] = round(gpu_ms, 3)
    out["text_to_image"] = compare_lists(cpu_t, gpu_t, resolution)
    out["image_to_captions"] = compare_lists(cpu_i, gpu_i, resolution)
    return out


def compare_lists(reference: list[Any], other: list[Any], resolution: float, k: int = 10) -> dict[str, Any]:
    """Equal top-``k`` id lists; where they differ, whether the reference's scores from the first
    difference down (the ``k + 1``-th included) hold a near-tie: a gap within ``resolution``."""
    equal = near_tie = dropped = 0
    differ: list[dict[str, Any]] = []
    for q, (ref, got) in enumerate(zip(reference, other, strict=True)):
        ref_ids = [h.index for h in ref.hits[:k]]
        got_ids = [h.index for h in got.hits[:k]]
        dropped += len(ref_ids) - len(got_ids)
        if ref_ids == got_ids:
            equal += 1
            continue
        scores = [h.score for h in ref.hits]
        gaps = [a - b for a, b in itertools.pairwise(scores)]
        first = next(i for i, (a, b) in enumerate(zip(ref_ids, got_ids, strict=False)) if a != b)
        if any(g <= resolution * max(1.0, abs(scores[first])) for g in gaps[max(0, first - 1) :]):
            near_tie += 1
        else:
            differ.append({"query": q, "rank": first, "reference": ref_ids, "got": got_ids, "gaps": gaps})
    return {
        "equal": equal,
        "differ_at_near_tie": near_tie,
        "differ": len(differ),
        "hits_dropped": dropped,
        "differences": differ[:5],
    }


def rerank(target: str | None) -> dict[str, Any]:
    """FTF pairs/s at K = 100 (ViT-B/32 shapes) on the GPU, float16 against float32."""
    if target is None:
        return {"gpu": None}
    # Both dtypes in one run, timed in alternation, so their ratio is not a drift between two runs.
    args = ["--dtype", "float16", "float32", "--k", "100", "--patches", "49", "196", "--no-loop", "--json"]
    proc = _run([sys.executable, "-m", "bench.ftf_throughput", "--device", target, *args])
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            out[row["dtype"]] = row
    out["float16_over_float32"] = round(out["float16"]["pairs_per_s"] / out["float32"]["pairs_per_s"], 2)
    return out


def load(index_path: Path, seconds: int, users: int, target: str | None) -> dict[str, Any]:
    """The service on the GPU under load; queries are the demo's captions."""
    if target is None:
        return {"gpu": None}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The server's log goes to a file: a pipe nobody reads would fill and stall it under load.
    log = (index_path.parent / "serve.log").open("w")
    env = {**_env(), "RSIR_DEVICE": target, "RSIR_DTYPE": "auto", "RSIR_MAX_INFLIGHT": str(4 * users)}
    server = subprocess.Popen(
        [sys.executable, "-m", "rsir", "serve", "--index", str(index_path), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        started = time.perf_counter()
        _wait_ready(url, server, index_path.parent / "serve.log", timeout=300)
        out: dict[str, Any] = {"ready_s": round(time.perf_counter() - started, 1), "users": users}
        queries = _demo_queries(index_path)
        try:
            import locust  # noqa: F401

            from rsir.loadtest.run import run as locust_run

            out["client"] = "locust"
            summary = locust_run(url, users, f"{seconds}s", index_path.parent / "locust", env=_env())
            out["aggregate"] = summary.get("Aggregated", summary)
        except ImportError:
            out["client"] = "httpx closed loop (Locust not installed)"
            out["aggregate"] = _closed_loop(url, queries, users, seconds)
        return out
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _closed_loop(url: str, queries: list[str], users: int, seconds: int) -> dict[str, Any]:
    """``users`` threads, each sending the next text query as soon as its last answer came."""
    import httpx

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def user(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            i = offset
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    body = {"query": queries[i % len(queries)], "k": 10}
                    ok = client.post("/search/text", json=body).is_success
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    failures[0] += not ok
                i += users

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies)
    return {
        "requests": int(lat.size),
        "failures": failures[0],
        "rps": round(lat.size / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
    }


def _demo_queries(index_path: Path) -> list[str]:
    from rsir.index.versions import load_index

    captions = load_index(index_path, with_sgpd=False).gallery.captions
    return list(captions.texts) if captions is not None else ["an airport with planes"]


def _engine_config(device: str, dtype: str) -> Any:
    from rsir.model.precision import parse_precision
    from rsir.search.engine import EngineConfig

    return EngineConfig(device=device, dtype=parse_precision(dtype))


def _wait_ready(url: str, server: subprocess.Popen[str], log: Path, timeout: float) -> None:
    import httpx

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"rsir serve exited with {server.returncode}: {tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"rsir serve not ready after {timeout:.0f} s")


def _rsir(*args: str) -> None:
    proc = _run([sys.executable, "-m", "rsir", *args], check=False)
    if proc.returncode not in (0, 3):  # 3: built, some files skipped
        raise RuntimeError(f"rsir {args[0]} exited with {proc.returncode}: {proc.stderr[-2000:]}")


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, check=check)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(line: str) -> None:
    print(f"[gpu-check] {line}", flush=True)


if __name__ == "__main__":
    main()
