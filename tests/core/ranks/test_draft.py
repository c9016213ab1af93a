"""Loading a draft: what does not fit in free memory, or speaks other tokens, is refused
with a sentence; auto with a self draft loads nothing where no link costs anything."""

from __future__ import annotations

import pytest

from core.engine.options import RunOptions
from core.errors import ModelError, TpiError
from core.model.tokenizer import ChatTokenizer
from core.ranks import draft
from core.ranks.draft import draft_bytes, self_draft_dtype, start_speculator
from tests.fixtures.kernel_cache import seed_kernels
from tests.fixtures.tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


def test_a_draft_that_does_not_fit_in_free_memory_is_refused(tiny, monkeypatch):
    need = draft_bytes(tiny, "q8_0")
    assert 0 < need < draft_bytes(tiny, "float32")
    monkeypatch.setattr(draft, "free_memory", lambda: need)  # 60% of it is not enough
    with pytest.raises(TpiError, match="GB free"):
        start_speculator(tiny, ChatTokenizer(tiny), RunOptions(speculate="2"), 2)


def test_a_draft_with_other_logits_is_refused(tiny, tmp_path):
    other = make_tiny_model(tmp_path / "other", "llama", vocab_size=600)
    with pytest.raises(ModelError, match="logits"):
        start_speculator(tiny, ChatTokenizer(tiny),
                         RunOptions(speculate="2", draft=str(other)), 2)


def test_a_draft_that_is_not_there_is_a_sentence(tiny, tmp_path):
    with pytest.raises(TpiError) as e:
        start_speculator(tiny, ChatTokenizer(tiny),
                         RunOptions(speculate="2", draft=str(tmp_path / "nothing")), 2)
    assert "nothing" in str(e.value)


def test_auto_self_draft_on_one_rank_loads_nothing(tiny):
    assert start_speculator(tiny, ChatTokenizer(tiny), RunOptions(speculate="auto"), 1) is None
    assert start_speculator(tiny, ChatTokenizer(tiny), RunOptions(speculate="off"), 2) is None
    assert self_draft_dtype(tiny, "auto") == "q8_0"  # a float folder's self-draft
    assert self_draft_dtype(tiny, "int8") == "int8"  # a quantized target keeps its own


def test_auto_self_draft_with_every_rank_here_loads_nothing(tiny, tmp_path, monkeypatch,
                                                            built_kernels):
    """Two ranks on this computer and no link latency: a self-draft cannot pay, and loading
    it would write a second set of shards (the default model's cache doubled)."""
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path / "cache"))
    tok = ChatTokenizer(tiny)
    assert start_speculator(tiny, tok, RunOptions(speculate="auto"), 2) is None
    assert not (tmp_path / "cache").exists()
    seed_kernels(tmp_path / "cache", built_kernels)  # the drafts below need not compile them
    for opts, devices in ((RunOptions(speculate="auto", link_delay_ms=2.0), False),
                          (RunOptions(speculate="auto"), True)):  # a link that costs
        spec = start_speculator(tiny, tok, opts, 2, devices=devices)
        try:
            assert spec is not None
        finally:
            spec.close()


def test_another_model_with_the_same_tokenizer_drafts(tiny, tmp_path):
    other = make_tiny_model(tmp_path / "small", "llama", seed=3, num_hidden_layers=1)
    spec = start_speculator(tiny, ChatTokenizer(tiny),
                            RunOptions(speculate="3", context=64, draft=str(other)), 2)
    try:
        assert spec.control.fixed == 3 and spec.control.draft_ms > 0
        assert spec.draft.rank.cfg.num_layers == 1 and spec.draft.max_seq == 64
        assert spec.draft.step([1, 5, 9], 0).shape == (512,)
    finally:
        spec.close()
