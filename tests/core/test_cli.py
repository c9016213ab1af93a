"""The command line's defaults: what a user gets without flags."""

from __future__ import annotations

import pytest

from core.cli import build_parser


@pytest.mark.parametrize("command", [["generate", "--prompt", "hi"], ["chat"]])
def test_sampling_is_greedy_by_default_like_the_app(command):
    """The default model's first token is a near-tie: sampled, it often answers in French.
    The app's Settings default (app/settings/panel.DEFAULT_PARAMS) is greedy too."""
    assert build_parser().parse_args(command).temperature == 0.0
