"""A fake hub (tests/fixtures/fake_hub.py) that huggingface_hub is pointed at."""

from __future__ import annotations

import pytest

from core.library.catalog import CatalogEntry, CatalogFile
from tests.fixtures.fake_hub import FakeHub

REPO = "tpi-tests/tiny-GGUF"

def entry(repo: str = REPO, files: tuple[CatalogFile, ...] | None = None,
          id: str = "tiny") -> CatalogEntry:  # noqa: A002 (the catalog's field name)
    files = files or (CatalogFile("tiny.Q8_0.gguf", 1),)
    return CatalogEntry(id=id, name="Tiny", repo=repo, revision="main", files=files,
                        parameters=1000, quantization="Q8_0", license="mit",
                        chat_template="ChatML", layers=2, hidden_size=8, vocab_size=16)

def payload(n: int, seed: int = 1) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 9)) & 0xFF for i in range(n))

@pytest.fixture
def hub_env(monkeypatch):
    """Point huggingface_hub at a hub the test starts: yields a function repos -> FakeHub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite turns it on
    hubs: list[FakeHub] = []

    def start(repos) -> FakeHub:
        hub = FakeHub(repos).start()
        hubs.append(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        return hub

    yield start
    for h in hubs:
        h.stop()
