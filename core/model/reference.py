"""transformers' own model on a model dir's weights: the reference our engine must equal.

A Hugging Face folder loads as usual; an imported GGUF (no weight files of its own) is
built from its config.json and given the float32 tensors GgufWeights reads from the file.
Used by tests and benchmarks, never on the chat path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.model.gguf_weights import is_gguf_dir, open_weights


def transformers_model(model_dir: Path):
    """An eval-mode float32 transformers model of `model_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not is_gguf_dir(model_dir):
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)),
                                             dtype=torch.float32)
    with open_weights(model_dir) as w:
        result = model.load_state_dict({n: w.get(n) for n in w.names()}, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise ValueError(f"{model_dir}: weights do not fit the config ({result})")
    model.tie_weights()
    return model.eval()
