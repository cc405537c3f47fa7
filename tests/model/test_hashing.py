"""CFITR hash heads: bit packing, the loss against a per-pair loop, training on synthetic pairs, I/O."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from rsir.index.hash_codes import HashRecall
from rsir.model.errors import CheckpointError, InvalidInputError
from rsir.model.hashing import (
    HashHead,
    HashHeads,
    hamming_reference,
    hash_loss,
    pack_bits,
    train_hash_heads,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These batches are tiny: several intra-op threads only spin against each other on a loaded
    machine (30x slower here), so the tests run torch single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pack_bits_known_pattern() -> None:
    # bit k -> bit k % 8 (least significant first) of byte k // 8; h >= 0 (zero included) is a 1
    h = torch.tensor(
        [
            [1.0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0.0],
            [-0.5, 0.3, 0.2, -0.1, -1, -1, -1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    codes = pack_bits(h)
    assert codes.dtype == np.uint8 and codes.shape == (2, 2)
    assert codes.tolist() == [[0b00000001, 0b10000000], [0b10000110, 0b11111111]]
    assert pack_bits(h.numpy()).tolist() == codes.tolist()
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        pack_bits(torch.zeros(2, 12))


def test_hamming_reference_small() -> None:
    a = np.array([[0b1111_0000, 0], [0, 0]], dtype=np.uint8)
    b = np.array([[0b1111_1111, 1], [0b1111_0000, 0]], dtype=np.uint8)
    assert hamming_reference(a, b).tolist() == [[5, 0], [9, 4]]


def test_hash_head_shapes_and_range() -> None:
    torch.manual_seed(0)
    head = HashHead(dim=12, bits=32)
    assert head.hidden == 64
    out = head(torch.randn(5, 12) * 10)
    assert out.shape == (5, 32) and bool((out.abs() < 1).all())
    assert HashHead(dim=300, bits=16).hidden == 300 and HashHead(4, 8, hidden=7).hidden == 7
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        HashHead(12, bits=20)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _naive_loss(
    h_img: torch.Tensor, h_txt: torch.Tensor, margin: float, groups: list[int] | None = None
) -> dict[str, float]:
    img, txt = h_img.tolist(), h_txt.tolist()
    n = len(img)
    labels = groups if groups is not None else list(range(n))
    S = [[_cos(img[i], txt[j]) for j in range(n)] for i in range(n)]
    rows, cols = [], []
    for i in range(n):  # image i as the anchor: its hardest caption negative
        cands = [max(0.0, margin - S[i][i] + S[i][j]) for j in range(n) if labels[j] != labels[i]]
        rows.append(max(cands) if cands else 0.0)
    for j in range(n):  # caption j as the anchor: its hardest image negative
        cands = [max(0.0, margin - S[j][j] + S[i][j]) for i in range(n) if labels[i] != labels[j]]
        cols.append(max(cands) if cands else 0.0)
    hinge = sum(rows) / n + sum(cols) / n

    def sgn(x: float) -> float:
        return 1.0 if x >= 0 else -1.0

    quant = sum(sum((sgn(x) - x) ** 2 for x in item) for item in img) / n
    quant += sum(sum((sgn(x) - x) ** 2 for x in item) for item in txt) / n
    balance = sum(sum(item) ** 2 for item in img) / n + sum(sum(item) ** 2 for item in txt) / n
    return {"hinge": hinge, "quantisation": quant, "balance": balance}


@pytest.mark.parametrize("groups", [None, [0, 1, 1, 2, 0, 3]])
def test_hash_loss_equals_per_pair_loop(groups: list[int] | None) -> None:
    gen = torch.Generator().manual_seed(3)
    h_img = torch.tanh(torch.randn(6, 8, generator=gen, dtype=torch.float64))
    # captions near their images, so some hinge terms are zero and some are not
    h_txt = torch.tanh(h_img + 0.8 * torch.randn(6, 8, generator=gen, dtype=torch.float64))
    label_tensor = torch.tensor(groups) if groups is not None else None
    total, parts = hash_loss(h_img, h_txt, margin=0.2, groups=label_tensor)
    ref = _naive_loss(h_img, h_txt, 0.2, groups)
    for name, value in ref.items():
        assert float(parts[name]) == pytest.approx(value, rel=1e-9, abs=1e-12), name
    expected = ref["hinge"] + 0.001 * ref["quantisation"] + 0.01 * ref["balance"]
    assert float(total) == pytest.approx(expected, rel=1e-9)
    assert float(parts["total"]) == pytest.approx(expected, rel=1e-9)
    assert ref["hinge"] > 0  # the example exercises the hinge, not only its zero side


def test_quantisation_and_balance_hand_computed_2x4() -> None:
    h_img = torch.tensor([[0.5, -0.5, 0.0, 1.0], [0.9, 0.8, -0.2, -0.1]], requires_grad=True)
    h_txt = torch.tensor([[-0.5, -0.5, -0.5, -0.5], [0.2, 0.2, 0.2, 0.2]], requires_grad=True)
    total, parts = hash_loss(h_img, h_txt, margin=0.2)
    # sign(0) = +1.  image rows: .25+.25+1+0 = 1.5 and .01+.04+.64+.81 = 1.5 -> mean 1.5
    # text rows: 4 * .25 = 1.0 and 4 * .64 = 2.56 -> mean 1.78
    assert float(parts["quantisation"]) == pytest.approx(1.5 + 1.78, rel=1e-6)
    # per-item (sum of bits)^2: image 1.0^2, 1.4^2 -> 1.48; text (-2)^2, 0.8^2 -> 2.32
    assert float(parts["balance"]) == pytest.approx(1.48 + 2.32, rel=1e-6)
    assert float(total.detach()) == pytest.approx(float(parts["hinge"]) + 0.001 * 3.28 + 0.01 * 3.8, rel=1e-6)
    total.backward()  # type: ignore[no-untyped-call]  # differentiable end to end
    assert h_img.grad is not None and bool(torch.isfinite(h_img.grad).all())


def test_hash_loss_single_pair_and_errors() -> None:
    total, parts = hash_loss(torch.full((1, 8), 0.5), torch.full((1, 8), -0.5))
    assert float(parts["hinge"]) == 0.0 and float(total) > 0
    with pytest.raises(InvalidInputError, match=r"\[B,b\]"):
        hash_loss(torch.zeros(3, 8), torch.zeros(2, 8))


def _synthetic(n_images: int, per_image: int, dim: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))  # clustered gallery: images share 8 directions
    images = centres[rng.integers(0, 8, n_images)] + 0.9 * rng.normal(size=(n_images, dim))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    links = np.repeat(np.arange(n_images), per_image)

    def captions(s: int) -> NDArray[np.float32]:
        r = np.random.default_rng(s)
        t = images[links] + noise * r.normal(size=(links.size, dim)) / math.sqrt(dim)
        unit: NDArray[np.float32] = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
        return unit

    return images.astype(np.float32), captions(seed + 1), captions(seed + 2), links


def _recall_at(heads: HashHeads, images: np.ndarray, texts: np.ndarray, links: np.ndarray, k: int) -> float:
    index = HashRecall(heads.encode_images(images))
    _, ids = index.search(heads.encode_texts(texts), k)
    return float(np.mean([links[i] in ids[i] for i in range(links.size)]))


def test_training_lowers_loss_and_recalls_far_above_chance() -> None:
    images, train_txt, test_txt, links = _synthetic(200, 3, 32, noise=0.6, seed=0)
    untrained = HashHeads(HashHead(32, 64), HashHead(32, 64), 64)
    heads, losses = train_hash_heads(images, train_txt, links, bits=64, epochs=15, batch_size=64, seed=0)
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]
    assert not heads.image.training and not heads.text.training
    chance = 10 / 200
    recall = _recall_at(heads, images, test_txt, links, 10)  # held-out captions (fresh noise)
    assert recall > 0.6 > 10 * chance
    assert recall > _recall_at(untrained, images, test_txt, links, 10) + 0.2
    codes = heads.encode_images(images)
    assert codes.shape == (200, 8) and codes.dtype == np.uint8
    # bit balance: a typical code is close to half ones
    ones = np.unpackbits(codes, axis=1).sum(axis=1)
    assert abs(float(np.median(ones)) - 32) < 12


def test_training_is_deterministic_and_leaves_global_rng_alone() -> None:
    images, txt, _, links = _synthetic(40, 2, 16, noise=0.5, seed=5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, la = train_hash_heads(images, txt, links, bits=16, epochs=2, batch_size=16, seed=7)
    assert torch.equal(torch.rand(1), before)
    b, lb = train_hash_heads(images, txt, links, bits=16, epochs=2, batch_size=16, seed=7)
    assert la == lb
    assert np.array_equal(a.encode_texts(txt), b.encode_texts(txt))
    c, _ = train_hash_heads(images, txt, links, bits=16, epochs=2, batch_size=16, seed=8)
    assert not np.array_equal(a.encode_texts(txt), c.encode_texts(txt))


def test_training_input_errors() -> None:
    images, txt, _, links = _synthetic(10, 2, 8, noise=0.5, seed=1)
    with pytest.raises(InvalidInputError, match="text_image ids"):
        train_hash_heads(images, txt, links + 5, bits=8, epochs=1)
    with pytest.raises(InvalidInputError, match="text_image must be"):
        train_hash_heads(images, txt, links[:-1], bits=8, epochs=1)
    with pytest.raises(InvalidInputError, match=r"\[N,d\]"):
        train_hash_heads(images, txt[:, :4], links, bits=8, epochs=1)
    # 21 captions with batches of 10: the lone last caption joins the previous batch (BatchNorm)
    _, losses = train_hash_heads(
        images, np.vstack([txt, txt[:1]]), np.append(links, 0), bits=8, epochs=1, batch_size=10
    )
    assert len(losses) == 1 and math.isfinite(losses[0])


def test_save_load_round_trip_gives_identical_codes(tmp_path: Path) -> None:
    images, txt, _, links = _synthetic(30, 2, 16, noise=0.5, seed=2)
    heads, _ = train_hash_heads(images, txt, links, bits=24, epochs=2, batch_size=16, seed=0)
    path = tmp_path / "hash.safetensors"
    heads.save(path)
    again = HashHeads.load(path)
    assert again.bits == 24 and again.dim == 16
    assert np.array_equal(again.encode_images(images), heads.encode_images(images))
    assert np.array_equal(again.encode_texts(txt), heads.encode_texts(txt))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        assert fh.metadata()["bits"] == "24" and fh.metadata()["dim"] == "16"
    assert all(k.startswith(("image.", "text.")) for k in keys) and any(k.startswith("text.") for k in keys)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read hash heads"):
        HashHeads.load(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        HashHeads.load(tmp_path / "missing.safetensors")


def test_encode_restores_training_mode_and_checks_dim() -> None:
    heads = HashHeads(HashHead(8, 16), HashHead(8, 16), 16)
    heads.image.train()
    assert heads.encode_images(np.zeros((0, 8), dtype=np.float32)).shape == (0, 2)
    assert heads.image.training
    with pytest.raises(InvalidInputError, match=r"\[N,8\]"):
        heads.encode_texts(np.zeros((3, 9), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="bits"):
        HashHeads(HashHead(8, 16), HashHead(8, 24), 16)
