"""KER (§4): keyword masking, the decoder and its loss, and a short training run with KER on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig, build_model
from rsir.model.errors import InvalidInputError
from rsir.model.ker import IGNORE_INDEX, KERDecoder, build_keyword_vocab, ker_loss, mask_keywords
from rsir.model.train import TrainConfig, train
from tests.conftest import TINY_ARCH
from tests.model.test_train import _config, _dataset


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return open_clip.get_tokenizer(TINY_ARCH)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Two intra-op threads on a busy 2-core machine make these tiny steps several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_vocab_keeps_single_piece_words_and_a_mask_token_no_text_produces(tokenizer: Any) -> None:
    vocab = build_keyword_vocab(tokenizer)
    assert {"plane", "planes", "runway", "storage", "tank", "airport", "farmland"} <= set(vocab.words)
    assert {"bareland", "runways"} <= set(vocab.dropped)  # BPE splits them: no single class position
    for word, piece in zip(vocab.words, vocab.token_ids.tolist(), strict=True):
        ids = tokenizer([word])[0]
        assert ids[1] == piece and ids[3] == 0  # start, the one piece, end, padding
    assert len(set(vocab.token_ids.tolist())) == len(vocab)
    mask = vocab.mask_token_id
    assert mask not in vocab.token_ids.tolist() and mask not in (0, 49406, 49407)
    text_ids = tokenizer(["\x00 a \x00 plane\x00"])[0]
    assert mask not in text_ids.tolist()


def test_mask_keywords_replaces_exactly_the_keywords(tokenizer: Any) -> None:
    vocab = build_keyword_vocab(tokenizer)
    ids = tokenizer(["two planes near the runway , a storage tank .", "a red roof ."])
    masked, targets = mask_keywords(ids, vocab.token_ids, vocab.mask_token_id, torch.Generator())
    # [sot, two, planes, near, the, runway, ",", a, storage, tank, ".", eot]
    where = {2: "planes", 5: "runway", 8: "storage", 9: "tank"}
    for pos in range(ids.shape[1]):
        if pos in where:
            assert masked[0, pos] == vocab.mask_token_id
            assert targets[0, pos] == vocab.words.index(where[pos])
        else:
            assert masked[0, pos] == ids[0, pos] and targets[0, pos] == IGNORE_INDEX
    assert torch.equal(masked[1], ids[1]) and bool((targets[1] == IGNORE_INDEX).all())

    none, no_targets = mask_keywords(ids, vocab.token_ids, vocab.mask_token_id, probability=0.0)
    assert torch.equal(none, ids) and bool((no_targets == IGNORE_INDEX).all())
    draws = [
        mask_keywords(ids, vocab.token_ids, vocab.mask_token_id, torch.Generator().manual_seed(3), 0.5)[1]
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1])  # seeded
    kept = draws[0] != IGNORE_INDEX
    assert bool((targets[kept] == draws[0][kept]).all())  # a subset of the full masking


def test_ker_loss_is_cross_entropy_over_masked_positions() -> None:
    logits = torch.tensor(
        [[[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], [[-0.5, 1.5, 0.0], [1.0, 1.0, 1.0]]], requires_grad=True
    )
    targets = torch.tensor([[0, IGNORE_INDEX], [1, 2]])
    expected = F.cross_entropy(logits.reshape(-1, 3), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(ker_loss(logits, targets), expected)

    empty = ker_loss(logits, torch.full((2, 2), IGNORE_INDEX))
    assert float(empty.detach()) == 0.0
    empty.backward()  # type: ignore[no-untyped-call]
    assert (
        logits.grad is not None
        and bool(torch.isfinite(logits.grad).all())
        and float(logits.grad.abs().sum()) == 0
    )


def test_decoder_predicts_keywords_from_patches(one_thread: None) -> None:
    torch.manual_seed(0)
    decoder = KERDecoder(dim=32, n_keywords=5)
    words, patches = torch.randn(4, 6, 32), torch.randn(4, 9, 32)
    word_mask = torch.ones(4, 6, dtype=torch.bool)
    word_mask[:, 4:] = False
    logits = decoder(words, word_mask, patches)
    assert logits.shape == (4, 6, 5) and bool((logits[:, 4:] == 0).all())
    # the keyword is a function of the image only (queries are all the same mask-like token)
    targets = torch.full((4, 6), IGNORE_INDEX)
    targets[:, 1] = torch.arange(4)
    words = torch.zeros_like(words) + words[:1, :1]
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = ker_loss(decoder(words, word_mask, patches), targets)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]


def test_training_with_ker_lowers_it_resumes_and_exports_the_plain_model(
    tmp_path: Path, one_thread: None
) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), split="train")
    straight = train(_config(epochs=3, ker_weight=0.5), ds, tmp_path / "straight")
    assert straight.steps == 6
    assert straight.last_ker_loss < 0.8 * straight.first_ker_loss  # planes/runway learnt in 5 updates

    stopped = train(_config(epochs=3, max_steps=3, ker_weight=0.5), ds, tmp_path / "split")
    assert stopped.steps == 3
    with pytest.raises(InvalidInputError, match="KER"):
        train(_config(epochs=3), ds, tmp_path / "split")  # KER state in last.pt, KER off now
    resumed = train(_config(epochs=3, ker_weight=0.5), ds, tmp_path / "split")
    assert resumed.steps == 6 and resumed.first_ker_loss == straight.first_ker_loss
    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    saved = [
        torch.load(p / "last.pt", weights_only=False)["ker"]
        for p in (tmp_path / "straight", tmp_path / "split")
    ]
    for key, value in saved[0]["decoder"].items():
        assert torch.equal(value, saved[1]["decoder"][key]), key

    # The decoder is training-only: the weights file is exactly the plain open_clip model's state dict.
    assert set(a) == set(build_model(TINY_ARCH).state_dict())
    enc = ClipEncoder(EncoderConfig(arch=TINY_ARCH, checkpoint=straight.weights, device="cpu"))
    assert enc.encode_texts(["two planes near the runway"]).vectors.shape == (1, 32)


def test_ker_weight_must_be_non_negative() -> None:
    with pytest.raises(InvalidInputError, match="ker_weight"):
        TrainConfig(ker_weight=-0.5)
