"""Splitting Markdown into prose and code blocks, also mid-stream."""

from __future__ import annotations

from app.chat.markdown_blocks import split_blocks


def test_split_prose_and_code():
    text = "Intro\n\n```python\nprint(1)\n\nx = 2\n```\nAfter"
    blocks = split_blocks(text)
    assert [(b.kind, b.lang) for b in blocks] == [("markdown", ""), ("code", "python"),
                                                  ("markdown", "")]
    assert blocks[1].text == "print(1)\n\nx = 2" and blocks[1].closed
    assert blocks[2].text == "After"


def test_unclosed_fence_while_streaming():
    blocks = split_blocks("Here:\n```sh\nls -la")
    assert blocks[-1].kind == "code" and blocks[-1].text == "ls -la" and not blocks[-1].closed


def test_tilde_fence_and_no_code():
    assert split_blocks("~~~\na\n~~~")[0].text == "a"
    assert [b.kind for b in split_blocks("just *text*")] == ["markdown"]
    assert split_blocks("") == []
