"""``RSIR_DTYPE`` / ``rsir serve --dtype``: parsed into the one :class:`Precision` vocabulary, passed
to the engine, and a bad value refused at start with a message naming the setting and its choices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from rsir.cli import app
from rsir.index.versions import load_index
from rsir.model.encoders import ClipEncoder
from rsir.model.precision import Precision
from rsir.search.engine import QueryOptions, SearchEngine
from rsir.service.app import engine_config, load_encoder
from rsir.service.settings import Settings
from tests.service.conftest import LiveServer, TinyIndex, make_settings


def _from_env() -> Settings:
    none: dict[str, Any] = {}
    return Settings(**none)


def test_rsir_dtype_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSIR_DTYPE", raising=False)
    assert _from_env().dtype is Precision.AUTO
    monkeypatch.setenv("RSIR_DTYPE", "bfloat16")
    assert _from_env().dtype is Precision.BFLOAT16
    assert engine_config(_from_env()).dtype is Precision.BFLOAT16
    monkeypatch.setenv("RSIR_DTYPE", "half")
    with pytest.raises(ValidationError, match="'auto', 'float32', 'float16' or 'bfloat16'"):
        _from_env()


def test_rsir_text_dtype_reaches_the_text_tower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSIR_TEXT_DTYPE", "bfloat16")
    monkeypatch.setenv("RSIR_DEVICE", "cpu")
    encoder = load_encoder(_from_env())
    assert encoder.text_dtype == torch.bfloat16 and encoder.dtype == torch.float32
    assert dict(encoder.model.named_parameters())["token_embedding.weight"].dtype == torch.bfloat16
    monkeypatch.setenv("RSIR_TEXT_DTYPE", "float16")
    with pytest.raises(ValidationError, match="text_dtype"):
        _from_env()


@pytest.mark.parametrize(("env", "args"), [({"RSIR_DTYPE": "fp8"}, []), ({}, ["--dtype", "fp8"])])
def test_rsir_serve_refuses_a_bad_dtype_before_loading_anything(env: dict[str, str], args: list[str]) -> None:
    result = CliRunner().invoke(app, ["serve", "--index", "/nonexistent", *args], env=env)
    assert result.exit_code == 2, result.output
    assert "fp8" in result.output and "bfloat16" in result.output
    assert "Traceback" not in result.output
    if env:
        assert "RSIR_DTYPE" in result.output


def test_the_served_engine_reranks_in_the_configured_dtype(
    tiny_index: TinyIndex, tiny_encoder: ClipEncoder
) -> None:
    settings = make_settings(tiny_index.root, dtype="float16")
    expected = SearchEngine.from_index(load_index(tiny_index.root), tiny_encoder, engine_config(settings))
    assert expected.dtype == torch.float16
    live = LiveServer(settings, tiny_encoder).start()
    try:
        body = live.client().post("/search/text", json={"query": "harbour", "k": 5}).json()
    finally:
        live.stop()
    want = expected.search(["harbour"], QueryOptions(k=5))[0]
    assert [h["id"] for h in body["results"]] == [h.id for h in want.hits]
    assert len(body["results"]) == 5 and all(np.isfinite(h["fine_score"]) for h in body["results"])
    np.testing.assert_allclose([h["score"] for h in body["results"]], [h.score for h in want.hits], atol=1e-6)


def test_rsir_hash_ppsr_and_default_rerank_are_checked_and_reach_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RSIR_HASH_PPSR", raising=False)
    assert engine_config(_from_env()).hash_ppsr == "hamming"  # the spec's form by default
    monkeypatch.setenv("RSIR_HASH_PPSR", "cosine")
    assert engine_config(_from_env()).hash_ppsr == "cosine"
    monkeypatch.setenv("RSIR_HASH_PPSR", "euclid")
    with pytest.raises(ValidationError, match="'hamming' or 'cosine'"):
        _from_env()
    monkeypatch.delenv("RSIR_HASH_PPSR")
    # a server never runs exhaustive (EngineConfig.allow_exhaustive), so it is no default either
    assert engine_config(_from_env()).allow_exhaustive is False
    monkeypatch.setenv("RSIR_DEFAULT_RERANK", "exhaustive")
    with pytest.raises(ValidationError, match="exhaustive is for measurement"):
        _from_env()
