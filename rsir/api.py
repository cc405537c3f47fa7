"""The Python API, for notebooks and scripts: the same engine the service, the CLI and the benchmarks
call, behind two functions' worth of names.

    import rsir
    idx = rsir.open_index("indexes/synthrs")            # a root (its CURRENT version) or a version
    for hit in idx.search_text("two ships moored beside a long pier", k=5):
        print(hit.id, round(hit.score, 3))
    idx.search_image("tile.png", k=5, target="captions")  # image -> captions, reranked

The model defaults to the one the index was built with (its manifest names the architecture; the
shipped weights when it is the shipped model); give ``checkpoint=`` for your own weights. Options are
the engine's (:class:`rsir.search.options.QueryOptions`: ``recall_k``, ``rerank``, ``recall``, ``ppsr``,
``sar``, ``distinct``, ``filters``...), checked by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from rsir.index.versions import LoadedIndex, Manifest, load_index, resolve_version
from rsir.model.encoders import ClipEncoder, EncoderConfig, default_checkpoint
from rsir.model.images import decode_image
from rsir.model.precision import Precision
from rsir.search.engine import EngineConfig, Hit, QueryOptions, SearchEngine
from rsir.search.options import Target


@dataclass(frozen=True)
class Index:
    """An opened index version and the engine over it."""

    loaded: LoadedIndex
    engine: SearchEngine

    @property
    def version(self) -> str:
        return self.loaded.folder.name

    def __len__(self) -> int:
        return self.engine.n_images

    def search_text(self, query: str, k: int = 10, **options: Any) -> list[Hit]:
        """Images for a sentence, best first (``rerank="ftf"`` over the top ``recall_k`` by default)."""
        return self.engine.search([query], QueryOptions(k=k, **options))[0].hits

    def search_image(
        self, image: Image.Image | str | Path, k: int = 10, target: Target = "images", **options: Any
    ) -> list[Hit]:
        """Images like an example (coarse order), or captions that describe it (``target="captions"``,
        reranked by the FTF block). ``image``: a PIL image or a file path."""
        if not isinstance(image, Image.Image):
            image = decode_image(Path(image))
        return self.engine.search([image], QueryOptions(k=k, target=target, **options))[0].hits


def open_index(
    path: str | Path,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    device: str = "auto",
    dtype: Precision | str = Precision.AUTO,
) -> Index:
    """Open an index root or version for searching; the encoder must be the one it was built with
    (checked against the manifest, as the service checks it)."""
    folder = resolve_version(Path(path))
    arch = model or str(Manifest.read(folder).encoder["arch"])
    weights = Path(checkpoint) if checkpoint is not None else default_checkpoint(arch)
    encoder = ClipEncoder(EncoderConfig(arch=arch, checkpoint=weights, device=device))
    loaded = load_index(folder, encoder.describe())
    config = EngineConfig(device=device, dtype=Precision(dtype))
    return Index(loaded, SearchEngine.from_index(loaded, encoder, config))
