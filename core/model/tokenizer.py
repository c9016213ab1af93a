"""The tokenizer of a model dir, as rank 0 uses it: text <-> ids, chat template, streaming.

Wraps the Hugging Face fast tokenizer saved in the model dir (never fetched from a hub).
`TextStream` turns generated ids into printable text one id at a time, holding back bytes
of a multi-byte character until the id that completes it arrives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ModelError

_REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ChatTokenizer:
    """Encode, decode and apply the chat template of the model in `model_dir`."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        if not any((self.model_dir / f).is_file() for f in _TOKENIZER_FILES):
            raise ModelError(
                f"{self.model_dir} has no tokenizer (tokenizer.json or tokenizer.model)"
            )
        try:
            self.hf = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        except Exception as e:  # transformers raises OSError, ValueError, ... for a bad dir
            raise ModelError(
                f"the tokenizer in {self.model_dir} cannot be loaded ({_one_line(e)})"
            ) from None
        self.eos_ids: set[int] = self._eos_ids()

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; no BOS unless asked (chat templates write their own)."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for `messages` (role/content dicts), before tokenization."""
        if not self.has_chat_template:
            return _plain_chat(messages, add_generation_prompt)
        try:
            return self.hf.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except Exception as e:  # jinja2 TemplateError or a template's raise_exception()
            raise ModelError(
                f"the model's chat template rejected the conversation ({_one_line(e)})"
            ) from None

    def apply_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Prompt ids for `messages`, ending with the assistant's turn opener if asked."""
        text = self.render_chat(messages, add_generation_prompt)
        # A template writes BOS itself when the model wants it; the plain fallback does not,
        # so let the tokenizer add its usual specials there.
        return self.encode(text, add_special_tokens=not self.has_chat_template)

    def stream(self) -> TextStream:
        """A fresh incremental detokenizer for one reply."""
        return TextStream(self)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for name in ("config.json", "generation_config.json"):
            ids |= _json_eos(self.model_dir / name)
        if self.hf.eos_token_id is not None:
            ids.add(int(self.hf.eos_token_id))
        return ids


class TextStream:
    """Incremental detokenizer: `push(id)` returns the text that id makes printable.

    Each step decodes a short window that starts a few ids back, so tokenizers that drop a
    leading space when a piece is decoded alone (SentencePiece) still space words right, and
    holds back output while the window ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer: ChatTokenizer):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # ids before this are already emitted
        self.text = ""

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        new_text = self._tok.decode(self._ids[self._prefix :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        out = new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += out
        return out

    def flush(self) -> str:
        """Whatever is held back at the end of the reply (a dangling partial character)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        new_text = self._tok.decode(self._ids[self._prefix :])
        out = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self.text += out
        return out


def _plain_chat(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages]
    if add_generation_prompt:
        lines.append("assistant:")
    return "".join(lines)


def _one_line(err: Exception, limit: int = 200) -> str:
    """A library's (often multi-line) error text squeezed into the middle of our sentence."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_eos(path: Path) -> set[int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    v = data.get("eos_token_id") if isinstance(data, dict) else None
    if isinstance(v, int):
        return {v}
    if isinstance(v, list):
        return {int(x) for x in v if isinstance(x, int)}
    return set()
