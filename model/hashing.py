"""CFITR hash recall (ALGORITHMS.md §3): per-modality hash heads over frozen global vectors.

A :class:`HashHead` maps a unit global vector ``[d]`` to ``h`` in ``(-1, 1)^b``
(``Linear -> BatchNorm -> ReLU -> Linear -> tanh``); the stored code is ``sign(h)`` packed to ``b / 8``
bytes (16 bytes for the paper's 128 bits, against 2 KB for a 512-d float32 vector). The coarse score of
a (query, item) pair is minus the Hamming distance of their codes (see ``rsir.index.hash_codes``).

Bit convention, used everywhere in rsir: ``h_k >= 0`` is bit 1 (so ``sign(0)`` counts as ``+1``), and
bit ``k`` of a code is bit ``k % 8`` (least significant first) of byte ``k // 8``
(``np.packbits(..., bitorder="little")``). FAISS binary indexes only XOR bytes and count bits, so any
consistent order gives the same distances; this one is fixed so that stored codes stay readable.

Training (:func:`train_hash_heads`) only fits the two heads: the encoder's vectors are inputs, frozen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rsir.model.errors import CheckpointError, InvalidInputError

DEFAULT_BITS = 128
DEFAULT_MARGIN = 0.2
DEFAULT_QUANT_WEIGHT = 0.001
DEFAULT_BALANCE_WEIGHT = 0.01
FORMAT_NAME = "rsir-hash-heads"
_ENCODE_BATCH = 8192


def _check_bits(bits: int) -> None:
    if bits < 8 or bits % 8:
        raise InvalidInputError(f"hash bits must be a positive multiple of 8, got {bits}")


class HashHead(nn.Module):
    """``[B,dim] -> [B,bits]`` in ``(-1, 1)``: ``Linear -> BatchNorm1d -> ReLU -> Linear -> tanh``.

    ``hidden`` defaults to ``max(dim, 2 * bits)``. Like any BatchNorm network it needs batches of at
    least 2 in training mode; encode in eval mode (the running statistics), as :class:`HashHeads` does.
    """

    def __init__(self, dim: int, bits: int = DEFAULT_BITS, hidden: int | None = None) -> None:
        super().__init__()
        _check_bits(bits)
        if dim < 1:
            raise InvalidInputError(f"hash head input dim must be >= 1, got {dim}")
        self.dim = dim
        self.bits = bits
        self.hidden = hidden if hidden is not None else max(dim, 2 * bits)
        if self.hidden < 1:
            raise InvalidInputError(f"hash head hidden size must be >= 1, got {self.hidden}")
        self.net = nn.Sequential(
            nn.Linear(dim, self.hidden),
            nn.BatchNorm1d(self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, bits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


def pack_bits(h: torch.Tensor | NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.uint8]:
    """``h [N,b]`` (any real values) -> packed codes ``[N, b/8]`` uint8.

    Bit ``k`` is set where ``h[:, k] >= 0``; it is bit ``k % 8`` (least significant first) of byte
    ``k // 8``.
    """
    arr = h.detach().cpu().numpy() if isinstance(h, torch.Tensor) else np.asarray(h)
    if arr.ndim != 2:
        raise InvalidInputError(f"pack_bits needs an [N,b] array, got shape {arr.shape}")
    _check_bits(int(arr.shape[1]))
    return np.packbits(arr >= 0, axis=1, bitorder="little")


def hamming_reference(a_codes: NDArray[np.uint8], b_codes: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Hamming distances ``[A,B]`` of packed codes by a plain Python bit-count loop (a test oracle)."""
    if a_codes.ndim != 2 or b_codes.ndim != 2 or a_codes.shape[1] != b_codes.shape[1]:
        raise InvalidInputError(f"codes must be [A,n] and [B,n], got {a_codes.shape} and {b_codes.shape}")
    out = np.zeros((a_codes.shape[0], b_codes.shape[0]), dtype=np.int64)
    for i, a in enumerate(a_codes.tolist()):
        for j, b in enumerate(b_codes.tolist()):
            out[i, j] = sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))
    return out


def _signs(h: torch.Tensor) -> torch.Tensor:
    """``sign(h)`` with ``sign(0) = +1`` (the stored bit), no gradient."""
    return torch.where(h >= 0, 1.0, -1.0).to(h.dtype).detach()


def hash_loss(
    h_img: torch.Tensor,
    h_txt: torch.Tensor,
    margin: float = DEFAULT_MARGIN,
    quant_weight: float = DEFAULT_QUANT_WEIGHT,
    balance_weight: float = DEFAULT_BALANCE_WEIGHT,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The CFITR hashing loss of a batch of pairs; ``h_img[i]`` and ``h_txt[i]`` describe each other.

    ``total = hinge + quant_weight * quantisation + balance_weight * balance`` where, with
    ``S[i,j] = cos(h_img[i], h_txt[j])`` (``[B,B]``, diagonal = positives):

    - ``hinge`` (VSE++, hardest negatives, both directions):
      ``mean_i max_{j != i} relu(margin - S[i,i] + S[i,j]) + mean_j max_{i != j} relu(margin - S[j,j] +
      S[i,j])``. A batch of one (no negatives) gives 0.
    - ``quantisation`` = ``mean_i ||sign(h_img[i]) - h_img[i]||^2 + mean_i ||sign(h_txt[i]) - h_txt[i]||^2``:
      the squared norm is a SUM over the ``b`` bits, then a MEAN over the items, summed over both
      modalities. ``sign(0)`` counts as ``+1`` (the stored bit); no gradient flows through ``sign``.
    - ``balance`` = ``mean_i (sum_k h_img[i,k])^2 + mean_i (sum_k h_txt[i,k])^2``: the spec's
      ``(sum over bits of h)^2`` read PER ITEM (each code is pushed towards as many +1 as -1 bits), then
      averaged over items and summed over both modalities. (Not the batch-mean-per-bit reading.)

    ``groups [B]`` (optional, int): pairs with equal labels (e.g. two captions of one image in the same
    batch) are positives of each other, so they are never taken as negatives. ``None``: only the
    diagonal is positive.

    Returns ``(total, parts)``; ``parts`` holds the detached unweighted terms ``hinge``,
    ``quantisation``, ``balance`` and the detached ``total``.
    """
    if h_img.ndim != 2 or h_img.shape != h_txt.shape:
        raise InvalidInputError(f"h_img and h_txt must both be [B,b], got {h_img.shape} and {h_txt.shape}")
    n = h_img.shape[0]
    if n == 0:
        raise InvalidInputError("hash_loss needs a non-empty batch")
    S = F.normalize(h_img, dim=1) @ F.normalize(h_txt, dim=1).T
    pos = S.diagonal()
    if groups is not None:
        if groups.shape != (n,):
            raise InvalidInputError(f"groups must be [{n}], got {tuple(groups.shape)}")
        same = groups[:, None] == groups[None, :]
    else:
        same = torch.eye(n, dtype=torch.bool, device=S.device)
    if bool((~same).any()):
        negatives = S.masked_fill(same, float("-inf"))
        # relu is monotone, so max_j relu(m - s_ii + s_ij) = relu(m - s_ii + max_j s_ij); a row with no
        # negative at all (every other item shares its group) gives -inf -> 0.
        row = F.relu(margin - pos + negatives.max(dim=1).values)
        col = F.relu(margin - pos + negatives.max(dim=0).values)
        hinge = row.mean() + col.mean()
    else:
        hinge = S.new_zeros(())
    quant = ((_signs(h_img) - h_img) ** 2).sum(dim=1).mean() + ((_signs(h_txt) - h_txt) ** 2).sum(
        dim=1
    ).mean()
    balance = (h_img.sum(dim=1) ** 2).mean() + (h_txt.sum(dim=1) ** 2).mean()
    total = hinge + quant_weight * quant + balance_weight * balance
    parts = {
        "total": total.detach(),
        "hinge": hinge.detach(),
        "quantisation": quant.detach(),
        "balance": balance.detach(),
    }
    return total, parts


def _as_float_tensor(
    vectors: torch.Tensor | NDArray[np.floating], dim: int, device: torch.device
) -> torch.Tensor:
    # A read-only array (the index's memory-mapped vectors) is copied: torch warns on a read-only view.
    if isinstance(vectors, torch.Tensor):
        x = vectors
    else:
        arr = np.asarray(vectors)
        x = torch.from_numpy(arr) if arr.flags.writeable else torch.from_numpy(arr.copy())
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidInputError(f"vectors must be [N,{dim}], got shape {tuple(x.shape)}")
    return x.to(device=device, dtype=torch.float32)


@dataclass
class HashHeads:
    """The image and text hash heads of one model (same input dim, same ``bits``)."""

    image: HashHead
    text: HashHead
    bits: int

    def __post_init__(self) -> None:
        if self.image.bits != self.bits or self.text.bits != self.bits:
            raise InvalidInputError(
                f"heads give {self.image.bits}/{self.text.bits} bits, expected {self.bits}"
            )
        if self.image.dim != self.text.dim:
            raise InvalidInputError(f"image head takes {self.image.dim}-d, text head {self.text.dim}-d")

    @property
    def dim(self) -> int:
        return self.image.dim

    def encode_images(self, vectors: torch.Tensor | NDArray[np.floating]) -> NDArray[np.uint8]:
        """Image global vectors ``[N,dim]`` -> packed codes ``[N, bits/8]``."""
        return _encode(self.image, vectors)

    def encode_texts(self, vectors: torch.Tensor | NDArray[np.floating]) -> NDArray[np.uint8]:
        """Caption global vectors ``[N,dim]`` -> packed codes ``[N, bits/8]``."""
        return _encode(self.text, vectors)

    def save(self, path: Path) -> None:
        """One safetensors file: tensors ``image.*`` / ``text.*``, sizes in its metadata. Atomic."""
        path = Path(path)
        tensors = {
            f"{name}.{key}": value.detach().cpu().contiguous()
            for name, head in (("image", self.image), ("text", self.text))
            for key, value in head.state_dict().items()
        }
        metadata = {
            "format": FORMAT_NAME,
            "bits": str(self.bits),
            "dim": str(self.dim),
            "hidden": json.dumps({"image": self.image.hidden, "text": self.text.hidden}),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> HashHeads:
        """Read what :meth:`save` wrote; heads come back in eval mode on ``device``."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"hash heads file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
                tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
            if metadata.get("format") != FORMAT_NAME:
                raise CheckpointError(f"{path} is not an rsir hash-heads file (metadata {metadata})")
            bits, dim = int(metadata["bits"]), int(metadata["dim"])
            hidden = json.loads(metadata["hidden"])
            heads = []
            for name in ("image", "text"):
                head = HashHead(dim, bits, int(hidden[name]))
                prefix = f"{name}."
                head.load_state_dict(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                )
                heads.append(head.to(device).eval())
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors/torch/json raise many types for a bad file
            raise CheckpointError(
                f"cannot read hash heads from {path} ({type(exc).__name__}: {exc})"
            ) from exc
        return cls(image=heads[0], text=heads[1], bits=bits)


def _encode(head: HashHead, vectors: torch.Tensor | NDArray[np.floating]) -> NDArray[np.uint8]:
    device = next(head.parameters()).device
    x = _as_float_tensor(vectors, head.dim, device)
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            chunks = [pack_bits(head(x[s : s + _ENCODE_BATCH])) for s in range(0, x.shape[0], _ENCODE_BATCH)]
    finally:
        head.train(was_training)
    if not chunks:
        return np.zeros((0, head.bits // 8), dtype=np.uint8)
    return np.concatenate(chunks, axis=0)


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``order``; a last slice of one item (BatchNorm cannot train on it) joins
    the one before."""
    starts = list(range(0, order.numel(), batch_size))
    if len(starts) > 1 and order.numel() - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else order.numel()
        yield order[s:end]


def train_hash_heads(
    image_vectors: NDArray[np.float32],
    text_vectors: NDArray[np.float32],
    text_image: NDArray[np.int64],
    bits: int = DEFAULT_BITS,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    margin: float = DEFAULT_MARGIN,
    quant_weight: float = DEFAULT_QUANT_WEIGHT,
    balance_weight: float = DEFAULT_BALANCE_WEIGHT,
) -> tuple[HashHeads, list[float]]:
    """Fit both hash heads on frozen global vectors with :func:`hash_loss` (Adam).

    ``image_vectors [N,d]``, ``text_vectors [Nc,d]``; ``text_image [Nc]``: the image each caption
    describes. Each epoch shuffles the captions (seeded) and takes batches of ``batch_size`` (caption,
    its image) pairs; two captions of one image in a batch are not each other's negatives. Returns the
    heads (eval mode, on ``device``) and the mean loss of each epoch. Same inputs and seed on the same
    device give the same heads; the global torch RNG is left untouched.
    """
    if image_vectors.ndim != 2 or text_vectors.ndim != 2 or image_vectors.shape[1] != text_vectors.shape[1]:
        raise InvalidInputError(
            f"vectors must be [N,d] and [Nc,d], got {image_vectors.shape} and {text_vectors.shape}"
        )
    n_images, n_texts = image_vectors.shape[0], text_vectors.shape[0]
    links = np.asarray(text_image, dtype=np.int64)
    if links.shape != (n_texts,):
        raise InvalidInputError(f"text_image must be [{n_texts}], got shape {links.shape}")
    if n_texts < 2:
        raise InvalidInputError(f"training needs at least 2 captions, got {n_texts}")
    if links.min() < 0 or links.max() >= n_images:
        raise InvalidInputError(
            f"text_image ids must lie in [0, {n_images}), got {links.min()}..{links.max()}"
        )
    if batch_size < 2 or epochs < 1:
        raise InvalidInputError(f"need batch_size >= 2 and epochs >= 1, got {batch_size} and {epochs}")
    dev = torch.device(device)
    dim = int(image_vectors.shape[1])
    images = torch.from_numpy(np.ascontiguousarray(image_vectors, dtype=np.float32)).to(dev)
    texts = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32)).to(dev)
    owner = torch.from_numpy(links).to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = HashHeads(image=HashHead(dim, bits), text=HashHead(dim, bits), bits=bits)
    heads.image.to(dev).train()
    heads.text.to(dev).train()
    params = [*heads.image.parameters(), *heads.text.parameters()]
    optimiser = torch.optim.Adam(params, lr=lr)
    shuffler = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n_texts, generator=shuffler).to(dev)
        total, count = torch.zeros((), device=dev), 0
        for batch in _batches(order, batch_size):
            image_ids = owner[batch]
            loss, _ = hash_loss(
                heads.image(images[image_ids]),
                heads.text(texts[batch]),
                margin=margin,
                quant_weight=quant_weight,
                balance_weight=balance_weight,
                groups=image_ids,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += loss.detach()
            count += 1
        losses.append(float(total) / count)
    heads.image.eval()
    heads.text.eval()
    return heads, losses
