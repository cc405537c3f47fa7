"""Text encoding cost per query: the text tower on the batch's real length against the whole context,
in float32 and bfloat16, with and without oneDNN's AMX / AVX-512 bfloat16 kernels (issue 24 item 3).

Run: ``.venv/bin/python -m bench.text_encode`` (a Markdown table), e.g.
``--arch rsir-vit-tiny ViT-B-32-quickgelu --batch 1 8 --isa default AVX512_CORE --threads 1``.

Each ``--isa`` runs in its own process with ``ONEDNN_MAX_CPU_ISA`` set (oneDNN reads it once, at its
first kernel): ``default`` leaves it unset (AMX where the CPU has it, else AVX-512 with bfloat16
instructions where it has those), ``AVX512_CORE`` allows neither. Inside a process the modes are
timed in alternation, round after round, so that load from other processes falls on all alike:

- ``float32``: the encoder as served (``ClipEncoder`` runs float32 on the CPU);
- ``bf16-autocast``: the float32 model under ``torch.autocast("cpu", torch.bfloat16)``;
- ``bf16-model``: the text tower cast to bfloat16 (``EncoderConfig(text_dtype="bfloat16")``).

each on the whole context (``full``) and on the batch's real length (``truncated``). ViT-B/32 has
random weights (the cost does not depend on them); ``rsir-vit-tiny`` runs its shipped weights.
``ms/query`` is the median wall time of a batch over its size, ``cpu ms/query`` the same in CPU time
of the process (all its threads). ``max |dv|`` is the largest difference of the unit text vectors
from float32 on the whole context.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rsir.model import towers
from rsir.model.encoders import ClipEncoder, EncoderConfig, default_checkpoint

# Captions in the style of RSICD / SynthRS, 8 to 22 words: a batch's real length is its longest.
CAPTIONS = [
    "many planes are parked next to a long building in an airport .",
    "a playground with a red track is surrounded by green trees and buildings .",
    "two ships moored beside a long pier near storage tanks .",
    "several white storage tanks stand in rows beside a road .",
    "a river with a bridge passes through a dense residential area with many houses and roads .",
    "the baseball field is next to a parking lot full of cars .",
    "green farmland divided into rectangular fields by narrow paths .",
    "a church with a grey roof is surrounded by some green trees and several buildings near a road "
    "with cars parked on both sides .",
]
MODES = ("float32", "bf16-autocast", "bf16-model")
ISA_ENV = "ONEDNN_MAX_CPU_ISA"


def cpu_flags() -> list[str]:
    """The AMX and AVX-512 bfloat16 flags the CPU reports (Linux), for the record."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(f for f in set(flags) if f.startswith("amx") or f == "avx512_bf16")


def _encoder(arch: str) -> ClipEncoder:
    return ClipEncoder(EncoderConfig(arch=arch, checkpoint=default_checkpoint(arch), device="cpu"))


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
    if mode == "bf16-autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def _timed(fn: Any) -> tuple[float, float, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def run_child(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (arch, batch, mode, length) of this process's ISA, the modes interleaved per round."""
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for arch in args.arch:
        enc = _encoder(arch)
        models = {"float32": enc.model, "bf16-autocast": enc.model}
        models["bf16-model"] = copy.deepcopy(enc.model)  # what EncoderConfig(text_dtype="bfloat16") runs
        towers.cast_text_tower(models["bf16-model"], torch.bfloat16)
        for batch in args.batch:
            texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
            ids, specials = enc.tokenize(texts), enc._special_ids
            cases = [(mode, truncate) for mode in MODES for truncate in (False, True)]
            times: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in cases}
            vectors: dict[tuple[str, bool], torch.Tensor] = {}
            with torch.inference_mode():
                for _ in range(args.repeats + 1):  # the first round warms up
                    for mode, truncate in cases:
                        with _mode(mode):
                            wall, cpu, out = _timed(
                                partial(towers.text_features, models[mode], ids, specials, truncate)
                            )
                        times[(mode, truncate)].append((wall, cpu))
                        vectors[(mode, truncate)] = out[0].float()
            reference = vectors[("float32", False)]
            for mode, truncate in cases:
                kept = times[(mode, truncate)][1:]
                rows.append(
                    {
                        "isa": os.environ.get(ISA_ENV, "default"),
                        "arch": arch,
                        "batch": batch,
                        "mode": mode,
                        "length": towers.real_length(enc.model, ids) if truncate else ids.shape[1],
                        "truncated": truncate,
                        "ms_per_query": statistics.median(w for w, _ in kept) * 1e3 / batch,
                        "cpu_ms_per_query": statistics.median(c for _, c in kept) * 1e3 / batch,
                        "max_abs_dv": float((vectors[(mode, truncate)] - reference).abs().max()),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", default=["rsir-vit-tiny", "ViT-B-32-quickgelu"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--isa", nargs="+", default=["default", "AVX512_CORE"], help=f"{ISA_ENV} values, one process each"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per row instead of a table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    rows: list[dict[str, Any]] = []
    for isa in args.isa:
        env = {k: v for k, v in os.environ.items() if k != ISA_ENV}
        if isa != "default":
            env[ISA_ENV] = isa
        argv = [sys.executable, "-m", "bench.text_encode", "--child", "--arch", *args.arch]
        argv += ["--batch", *map(str, args.batch), "--repeats", str(args.repeats)]
        argv += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, CPU flags {cpu_flags() or 'none of amx*/avx512_bf16'}"
    )
    print("| arch | batch | ISA | mode | length | ms/query | cpu ms/query | max abs dv |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['batch']} | {r['isa']} | {r['mode']} | {r['length']} "
            f"| {r['ms_per_query']:.2f} | {r['cpu_ms_per_query']:.2f} | {r['max_abs_dv']:.1e} |"
        )


if __name__ == "__main__":
    main()
