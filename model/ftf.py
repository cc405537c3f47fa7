"""The FTF balanced text-guided interaction block (ALGORITHMS.md §2, stage 2). No learnable parameters.

For one (text, image) pair with word tokens ``W`` (n x d, masked) and patch tokens ``P`` (M x d),
``A = W P^T`` and temperature ``tau``:

- text to visual: ``a_ij = softmax_j(A_ij / tau)``, ``vhat_i = sum_j a_ij p_j``,
  ``s_tv = masked_mean_i cos(w_i, vhat_i)``;
- visual to text: ``b_ji = softmax_i(A_ij / tau)`` over valid words, ``what_j = sum_i b_ji w_i``,
  ``s_vt = mean_j cos(p_j, what_j)``;
- ``s_f = (s_tv + s_vt) / 2``; fused with the coarse score by :func:`fuse`.

Everything is computed for ``Q`` queries x ``K`` candidates at once (the attended vectors in chunks
of pairs, ``_CHUNK_BYTES``). Both directions of search use the same
function: a text query broadcasts ``W`` over its ``K`` image candidates, an image query broadcasts
``P`` over its ``K`` caption candidates.

Precision: tokens may be float16 or bfloat16. The products of token sets (``W P^T``, ``a P``, ``W W^T``)
run in that dtype (``|a P|`` of an image query in float32, from ``P P^T``); softmaxes, norms and means
run in float32 (:func:`accumulation_dtype`), and the scores (and attention) come back in float32.
Padding words never change a score, whatever they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rsir.model.errors import InvalidInputError

DEFAULT_TAU = 0.05
DEFAULT_LAMBDA = 0.5
# Applied in the accumulation dtype only: in float16 1e-8 rounds to 0, and 0 / 0 is NaN.
_EPS = 1e-8
# The attended vectors a_i P ([pairs, n, d], the block's largest tensor) are formed and reduced to their
# norms in chunks of pairs whose patches and vectors take about this many bytes, which bounds the
# block's peak memory for any batch. Not smaller: each chunk is two more parallel ops, and on a loaded
# 2-core machine every op waits for both threads (lab/HISTORY.md, "Rerank near its limit").
_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FTFParams:
    """Hyperparameters of the block (not weights): softmax temperature and coarse/fine fusion weight."""

    tau: float = DEFAULT_TAU
    lam: float = DEFAULT_LAMBDA

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise InvalidInputError(f"tau must be > 0, got {self.tau}")
        if not 0.0 <= self.lam <= 1.0:
            raise InvalidInputError(f"lam must be in [0, 1], got {self.lam}")


@dataclass(frozen=True)
class FTFOutput:
    """Scores ``[Q, K]``; ``attention`` is ``a_ij`` as ``[Q, K, n, M]`` when requested, else None.

    All in :func:`accumulation_dtype` of the tokens (float32 for half-precision tokens)."""

    fine: torch.Tensor
    s_tv: torch.Tensor
    s_vt: torch.Tensor
    attention: torch.Tensor | None = None


def interaction(
    words: torch.Tensor,
    word_mask: torch.Tensor,
    patches: torch.Tensor,
    tau: float = DEFAULT_TAU,
    return_attention: bool = False,
) -> FTFOutput:
    """Fine scores for every (text, image) pair of a batch.

    Args:
        words: ``[Qw, Kw, n, d]`` word tokens.
        word_mask: ``[Qw, Kw, n]`` bool, True for real words (padding, start and end tokens False).
        patches: ``[Qp, Kp, M, d]`` patch tokens.
        tau: softmax temperature.
        return_attention: also return ``a_ij`` (text-to-visual attention, the explanation maps).

    The leading dims broadcast to ``[Q, K]`` (e.g. a text query: ``words [Q,1,n,d]`` against
    ``patches [Q,K,M,d]``). Returns :class:`FTFOutput` with ``[Q, K]`` scores.
    """
    _check_inputs(words, word_mask, patches, tau)
    mask = word_mask.to(torch.bool)
    acc = accumulation_dtype(words.dtype, patches.dtype)
    scale = 1.0 / tau
    valid = mask.unsqueeze(-1)  # [Qw,Kw,n,1]
    # The GEMM runs in the tokens' dtype; everything after it in ``acc``. Padding rows of A are zeroed
    # so that garbage in padding words (even inf or NaN products) reaches no reduction: the visual to
    # text direction multiplies them by a zero weight, and 0 * inf would be NaN.
    A = torch.where(valid, _match(words, patches).to(acc), 0.0)  # [Q,K,n,M]

    # Softmaxes are written out (max, exp, sum): torch.softmax copies a non-contiguous input, and A
    # keeps the layout its GEMM gave (patches innermost).

    # Text to visual: each word attends over the patches. w_i . vhat_i = sum_j a_ij A_ij, so only the
    # norm of vhat_i needs the [.., n, d] product.
    e = torch.sub(A, A.amax(-1, keepdim=True)).mul_(scale).exp_()
    a = e.div_(e.sum(-1, keepdim=True))
    # vhat_i is formed from a rounded to the patches' dtype; the dot takes the same rounded weights, so
    # the cosine sees one vector and the rounding's change of scale cancels (a no-op in float32).
    a_low = a.to(patches.dtype)
    dot_tv = (a_low.to(acc) * A).sum(-1)  # [Q,K,n]
    word_norm = _norm(words, acc)  # [Qw,Kw,n]
    norms_tv = word_norm.clamp_min(_EPS) * _attended_norm(a_low, patches, acc).clamp_min(_EPS)
    # where, not a multiply by the mask: a garbage padding word's norm may be inf, and inf * 0 is NaN.
    per_word = torch.where(mask, dot_tv / norms_tv, 0.0)
    s_tv = per_word.sum(-1) / mask.sum(-1).to(acc)

    # Visual to text: each patch attends over the valid words only. what_j = sum_i b_ji w_i would be a
    # [Q,K,M,d] tensor; its dot with p_j is sum_i b_ji A_ij and its squared norm is b_j^T (W W^T) b_j,
    # so only [Q,K,n,M] tensors are formed (n words << d dims).
    logits_vt = torch.where(valid, A, float("-inf"))
    eb = logits_vt.sub_(logits_vt.amax(-2, keepdim=True)).mul_(scale).exp_()  # padding rows: 0
    b = eb.div_(eb.sum(-2, keepdim=True))  # [Q,K,n,M]
    dot_vt = (b * A).sum(-2)  # [Q,K,M]
    pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    gram = torch.matmul(words, words.transpose(-1, -2)).to(acc).masked_fill(~pair, 0.0)  # [Qw,Kw,n,n]
    if words.dtype != acc:
        # The diagonal |w_i|^2 scales every patch's what_j alike, so its rounding to the tokens' dtype
        # would not average out over the patches; the float32 norms are already at hand.
        gram.diagonal(dim1=-2, dim2=-1).copy_(torch.where(mask, word_norm.square(), 0.0))
    what_norm = (_gram_times(gram, b) * b).sum(-2).clamp_min(0).sqrt().clamp_min(_EPS)
    s_vt = (dot_vt / (_norm(patches, acc).clamp_min(_EPS) * what_norm)).mean(-1)  # [Q,K]

    return FTFOutput(
        fine=(s_tv + s_vt) / 2,
        s_tv=s_tv,
        s_vt=s_vt,
        attention=a if return_attention else None,
    )


def text_to_image(
    words: torch.Tensor,
    word_mask: torch.Tensor,
    patches: torch.Tensor,
    tau: float = DEFAULT_TAU,
    return_attention: bool = False,
) -> FTFOutput:
    """Text queries over image candidates: ``words [Q,n,d]``, ``word_mask [Q,n]``, ``patches [Q,K,M,d]``."""
    if words.dim() != 3 or word_mask.dim() != 2:
        raise InvalidInputError(
            f"text query tokens must be [Q,n,d] with mask [Q,n], got {tuple(words.shape)} "
            f"and {tuple(word_mask.shape)}"
        )
    return interaction(words.unsqueeze(1), word_mask.unsqueeze(1), patches, tau, return_attention)


def image_to_text(
    patches: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    tau: float = DEFAULT_TAU,
    return_attention: bool = False,
) -> FTFOutput:
    """Image queries over caption candidates: ``patches [Q,M,d]``, ``words [Q,K,n,d]``, ``mask [Q,K,n]``."""
    if patches.dim() != 3:
        raise InvalidInputError(f"image query tokens must be [Q,M,d], got {tuple(patches.shape)}")
    return interaction(words, word_mask, patches.unsqueeze(1), tau, return_attention)


def fuse(coarse: torch.Tensor, fine: torch.Tensor, lam: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """Final score ``lam * s_c + (1 - lam) * s_f`` (same shapes in, same shape out)."""
    return lam * coarse + (1.0 - lam) * fine


def _match(words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """``A = W P^T`` as ``[Q,K,n,M]``, one large GEMM when one side is shared across candidates.

    ``torch.matmul`` would materialise the broadcast side K (or Q) times and run K*Q tiny products.
    """
    (Qw, Kw, n, d), (Qp, Kp, M, _) = words.shape, patches.shape
    if Kw == 1 and Kp > 1 and Qw == Qp:  # text queries, each over its own candidates
        # [Q, n, K*M]: the patch axis stays innermost, as the softmax over patches wants it
        flat = words[:, 0] @ patches.reshape(Qp, Kp * M, d).transpose(-1, -2)
        return flat.view(Qp, n, Kp, M).transpose(1, 2)
    if Kw == 1 and Qp == 1:  # text queries, all over the same candidates (exhaustive)
        flat = patches[0].reshape(Kp * M, d) @ words[:, 0].reshape(Qw * n, d).T
        return flat.view(Kp, M, Qw, n).permute(2, 0, 3, 1)
    if Kp == 1 and Kw > 1 and Qw == Qp:  # image queries, each over its own caption candidates
        return (words.reshape(Qw, Kw * n, d) @ patches[:, 0].transpose(-1, -2)).view(Qw, Kw, n, M)
    if Kp == 1 and Qw == 1:  # image queries, all over the same captions (exhaustive)
        flat = words[0].reshape(Kw * n, d) @ patches[:, 0].reshape(Qp * M, d).T
        return flat.view(Kw, n, Qp, M).permute(2, 0, 1, 3)
    return torch.matmul(words, patches.transpose(-1, -2))


def _attended_norm(a: torch.Tensor, patches: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """``|a_i P|`` as ``[Q,K,n]`` in ``acc`` for ``a [Q,K,n,M]``; avoids expanding a shared ``patches``.

    One image per query (its captions as candidates): ``|a_i P|^2 = a_i (P P^T) a_i^T`` with the
    ``[M, M]`` Gram formed once per query in ``acc``, an ``n M^2`` product per pair in place of
    ``n M d``. Otherwise the ``[.., n, d]`` product runs in the patches' dtype (``a`` is in it
    already); only the norm is in ``acc``.
    """
    Q, K, n, M = a.shape
    Qp, Kp, _, _d = patches.shape
    if Kp == 1 and Qp == Q:  # one image per query, many captions
        P = patches[:, 0].to(acc)
        weights = a.to(acc).reshape(Q, K * n, M)
        squared = (torch.matmul(weights, P @ P.transpose(-1, -2)) * weights).sum(-1)
        norm: torch.Tensor = squared.clamp_min(0).sqrt().view(Q, K, n)
    elif Qp == 1 and Kp == K and Q > 1:  # the same candidates for every query
        shared = a.permute(1, 0, 2, 3).reshape(K, Q * n, M) @ patches[0]
        norm = _norm(shared, acc).view(K, Q, n).permute(1, 0, 2)
    elif Qp == Q and Kp == K:  # each pair its own image: [n, M] x [M, d] products, in chunks
        pairs = a.reshape(Q * K, n, M)
        flat = patches.reshape(Q * K, M, _d)
        step = max(1, _CHUNK_BYTES // ((M + n) * _d * patches.element_size()))
        norm = torch.cat(
            [_norm(torch.bmm(pairs[i : i + step], flat[i : i + step]), acc) for i in range(0, Q * K, step)]
        ).view(Q, K, n)
    else:
        norm = _norm(torch.matmul(a, patches), acc)
    return norm


def _gram_times(gram: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``gram @ b`` as ``[Q,K,n,M]`` for ``gram [Qw,Kw,n,n]``; one GEMM per query when every
    candidate shares the query's words (``Kw == 1``) instead of ``Q K`` products of ``n x n``."""
    Q, K, n, M = b.shape
    if gram.shape[1] == 1 and K > 1 and gram.shape[0] == Q:
        flat = b.transpose(1, 2).reshape(Q, n, K * M)  # a view when A came from _match's t2i GEMM
        return torch.matmul(gram[:, 0], flat).view(Q, n, K, M).transpose(1, 2)
    return torch.matmul(gram, b)


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype the block reduces in: float32 for half-precision tokens, else the tokens' own.

    float16 and bfloat16 lack the range or the precision for norms, softmax sums and means (1e-8
    is 0 in float16, and bfloat16 keeps 8 bits of a sum over 196 patches), so those run in float32.
    """
    acc = torch.float32
    for dtype in dtypes:
        acc = torch.promote_types(acc, dtype)
    return acc


def _norm(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """L2 norm over the last axis, squared and summed in ``acc`` (a float16 square underflows)."""
    norm: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, dtype=acc)
    return norm


def _check_inputs(words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor, tau: float) -> None:
    if words.dim() != 4 or patches.dim() != 4 or word_mask.dim() != 3:
        raise InvalidInputError(
            "expected words [Q,K,n,d], word_mask [Q,K,n], patches [Q,K,M,d]; got "
            f"{tuple(words.shape)}, {tuple(word_mask.shape)}, {tuple(patches.shape)}"
        )
    if word_mask.shape != words.shape[:3]:
        raise InvalidInputError(
            f"word_mask shape {tuple(word_mask.shape)} does not match words {tuple(words.shape[:3])}"
        )
    if words.shape[-1] != patches.shape[-1]:
        raise InvalidInputError(
            "word and patch tokens must share the embedding size, got "
            f"{words.shape[-1]} and {patches.shape[-1]}"
        )
    for name, size in (("words", words.shape[2]), ("patches", patches.shape[2])):
        if size == 0:
            raise InvalidInputError(f"{name} has no tokens (size 0 along the token axis)")
    for axis, label in ((0, "queries"), (1, "candidates")):
        if words.shape[axis] == 0 or patches.shape[axis] == 0:
            raise InvalidInputError(f"no {label} to score (size 0)")
    empty = ~word_mask.to(torch.bool).any(dim=-1)
    if bool(empty.any()):
        where = tuple(int(i) for i in empty.nonzero()[0].tolist())
        raise InvalidInputError(
            f"text at (query, candidate) index {where[:2]} has no valid word tokens (all padding); "
            "an empty text cannot be scored"
        )
    if not tau > 0:
        raise InvalidInputError(f"tau must be > 0, got {tau}")
