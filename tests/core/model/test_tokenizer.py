"""ChatTokenizer and TextStream on the tiny byte-level BPE tokenizer."""

from __future__ import annotations

import json

import pytest

from core.errors import ModelError
from core.model.tokenizer import ChatTokenizer
from tests.fixtures.tiny_tokenizer import BOS_ID, EOS_ID, save_tiny_tokenizer

MULTIBYTE = "Grüße aus Köln: 日本語のテキスト 🙂👍🏽 ok!"


@pytest.fixture
def tok_dir(tmp_path):
    return save_tiny_tokenizer(tmp_path / "tok")


@pytest.fixture
def tok(tok_dir) -> ChatTokenizer:
    return ChatTokenizer(tok_dir)


@pytest.mark.parametrize("text", ["The capital of France is Paris.", MULTIBYTE, " leading", ""])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < 512 for i in ids)
    assert tok.decode(ids) == text


def test_encode_adds_no_specials_by_default(tok):
    assert BOS_ID not in tok.encode("hello")


def test_decode_skips_special_tokens(tok):
    ids = [BOS_ID, *tok.encode("hi"), EOS_ID]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>hi<|im_end|>"


def test_stream_multibyte_never_emits_partial_characters(tok):
    ids = tok.encode(MULTIBYTE)
    stream = tok.stream()
    pieces = [stream.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    # Bytes of a character were held back (the tiny vocab splits CJK and emoji into bytes).
    assert "" in pieces
    assert "".join(pieces) + stream.flush() == MULTIBYTE
    assert stream.text == MULTIBYTE


def test_stream_matches_full_decode_for_ascii(tok):
    text = "Once upon a time there was a little robot who liked to count the stars."
    stream = tok.stream()
    out = "".join(stream.push(i) for i in tok.encode(text))
    assert out == text


def test_stream_swallows_end_of_turn(tok):
    stream = tok.stream()
    text = "".join(stream.push(i) for i in [*tok.encode("Paris."), EOS_ID])
    assert text == "Paris."


def test_stream_flush_emits_a_dangling_partial_character(tok):
    first_byte = tok.encode("🙂")[0]
    stream = tok.stream()
    assert stream.push(first_byte) == ""
    assert stream.flush() != ""


def test_apply_chat_template(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ids = tok.apply_chat(messages)
    assert ids[0] == BOS_ID
    assert tok.decode(ids, skip_special_tokens=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tok.apply_chat(messages, add_generation_prompt=False)
    assert tok.decode(without, skip_special_tokens=False).endswith("Hi!<|im_end|>\n")
    assert tok.has_chat_template


def test_plain_fallback_without_template(tok_dir):
    (tok_dir / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    tok = ChatTokenizer(tok_dir)
    assert not tok.has_chat_template
    ids = tok.apply_chat([{"role": "user", "content": "Hi!"}])
    assert tok.decode(ids) == "user: Hi!\nassistant:"


def test_eos_ids_union_of_tokenizer_and_configs(tok_dir):
    assert ChatTokenizer(tok_dir).eos_ids == {EOS_ID}
    (tok_dir / "config.json").write_text(json.dumps({"eos_token_id": 7}))
    (tok_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [EOS_ID, 9]}))
    assert ChatTokenizer(tok_dir).eos_ids == {EOS_ID, 7, 9}


def test_tiny_model_dir_has_the_tokenizer(tiny_models):
    tok = ChatTokenizer(tiny_models["qwen2"])
    assert tok.eos_ids == {EOS_ID} and tok.has_chat_template


def test_missing_tokenizer_is_a_model_error(tmp_path):
    with pytest.raises(ModelError) as e:
        ChatTokenizer(tmp_path)
    assert "tokenizer" in str(e.value)
