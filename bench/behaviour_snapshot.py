"""The engine's answers to fixed queries in every mode combination, on a small seeded demo index: the
behaviour a refactor must keep. ``tests/search/test_behaviour_snapshot.py`` compares a fresh run with
the committed snapshot.

    .venv/bin/python -m bench.behaviour_snapshot --write tests/fixtures/behaviour_snapshot.json

The index is built the way ``make demo`` builds its own (SynthRS, seed 7, the shipped model, the real
builder), only smaller. Queries: 20 of its captions as text and 20 of its images, each over every
combination of ``rerank``, ``recall``, ``ppsr`` and ``sar`` the request vocabulary has, image queries
against both targets. A combination the engine refuses is recorded with its message, so refusals are
kept too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rsir.index.versions import load_index
from rsir.index_builder.demo import DEMO_SEED, build_demo_index, shipped_encoder
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine, SearchResult

N_IMAGES = 120
SEED = DEMO_SEED  # also the query sample's seed
N_QUERIES = 20
K = 10
RERANKS = ("none", "ftf", "local", "exhaustive")
RECALLS = ("dense", "hash", "sgpd")
SARS = ("off", "hard", "soft")


@dataclass(frozen=True)
class Case:
    name: str
    image_query: bool
    options: QueryOptions


def build_demo(work: Path) -> tuple[Path, Path, ClipEncoder]:
    """The snapshot's demo index (``N_IMAGES``, seed 7) and the shipped model it was built with."""
    encoder = shipped_encoder()
    demo = build_demo_index(work, N_IMAGES, encoder)
    return demo.archive, demo.root, encoder


def cases() -> list[Case]:
    out = []
    for rerank, recall, ppsr, sar in itertools.product(RERANKS, RECALLS, (False, True), SARS):
        tag = f"rerank={rerank},recall={recall},ppsr={int(ppsr)},sar={sar}"
        common = {"k": K, "rerank": rerank, "recall": recall, "ppsr": ppsr, "sar": sar}
        out.append(Case(f"text->images {tag}", False, QueryOptions(**common)))  # type: ignore[arg-type]
        for target in ("images", "captions"):
            opts = QueryOptions(**common, target=target)  # type: ignore[arg-type]
            out.append(Case(f"image->{target} {tag}", True, opts))
    return out


def snapshot(archive: Path, root: Path, encoder: ClipEncoder) -> dict[str, Any]:
    """Queries are encoded once; one case per kind also runs the engine's encode-and-search entry
    points on the raw strings and images, so the encoding path is covered too."""
    loaded = load_index(root)
    engine = SearchEngine.from_index(loaded, encoder, EngineConfig(device="cpu"))
    captions = loaded.gallery.captions
    assert captions is not None
    rng = np.random.default_rng(SEED)
    texts = [captions.texts[i] for i in sorted(rng.choice(len(captions.texts), N_QUERIES, replace=False))]
    files = sorted((archive / "images").iterdir())
    picks = sorted(rng.choice(len(files), N_QUERIES, replace=False))
    images = [Image.open(files[i]).convert("RGB") for i in picks]
    text_feats, image_feats = encoder.encode_texts(texts), encoder.encode_images(images)
    out: dict[str, Any] = {}
    for case in cases():
        try:
            results = engine.search(image_feats if case.image_query else text_feats, case.options)
        except InvalidInputError as exc:
            out[case.name] = {"error": str(exc)}
            continue
        out[case.name] = _rows(results)
    out["encoded text->images"] = _rows(engine.search(texts, QueryOptions(k=K)))
    out["encoded image->captions"] = _rows(engine.search(images, QueryOptions(k=K, target="captions")))
    return out


def _rows(results: list[SearchResult]) -> dict[str, Any]:
    """Gallery (or caption) positions and fused scores of each query's hits."""
    return {
        "ids": [[h.index for h in r.hits] for r in results],
        "scores": [[round(h.score, 6) for h in r.hits] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", type=Path, required=True, help="where to write the snapshot (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsir-snapshot-") as work:
        snap = snapshot(*build_demo(Path(work)))
    lines = ",\n".join(f"{json.dumps(name)}: {json.dumps(snap[name])}" for name in sorted(snap))
    args.write.write_text("{\n" + lines + "\n}\n")
    errors = sum("error" in v for v in snap.values())
    print(f"{len(snap)} cases ({errors} refused) -> {args.write}")


if __name__ == "__main__":
    main()
