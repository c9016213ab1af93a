"""Split Markdown into prose and fenced code blocks (no Qt), so code gets its own widget.

Works on partial text while a reply streams: an unclosed fence is a code block so far.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    """kind "markdown" (text is Markdown) or "code" (text is the code, lang may be "")."""

    kind: str
    text: str
    lang: str = ""
    closed: bool = True


def split_blocks(text: str) -> list[Block]:
    """Prose and fenced code blocks of `text`, in order; empty prose is dropped."""
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    lang = ""
    for line in text.split("\n"):
        if not fence:
            m = _FENCE.match(line)
            if m:
                _flush_prose(blocks, prose)
                fence, lang, code = m.group(1), m.group(2), []
            else:
                prose.append(line)
        else:
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                blocks.append(Block("code", "\n".join(code), lang))
                fence = ""
            else:
                code.append(line)
    if fence:
        blocks.append(Block("code", "\n".join(code), lang, closed=False))
    else:
        _flush_prose(blocks, prose)
    return blocks


def _flush_prose(blocks: list[Block], prose: list[str]) -> None:
    text = "\n".join(prose).strip("\n")
    if text.strip():
        blocks.append(Block("markdown", text))
    prose.clear()
