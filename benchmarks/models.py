"""The models the benchmarks run on: the default model and random Llamas built once.

Random models are saved under benchmarks/out/models/ (gitignored) by the test fixture
`make_tiny_model` with large config overrides, and reused by later runs.

Anything that imports torch runs in a child process: the benchmark drivers stay small, so
the processes they start do not inherit a large peak RSS (on Linux, ru_maxrss survives
execve and Python spawns with vfork, so a child reports its parent's peak as its own).

    .venv/bin/python benchmarks/models.py              # build both random models now
    .venv/bin/python benchmarks/models.py --default    # print the default model dir
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
MODELS = OUT / "models"

# TinyLlama-1.1B's shape: 22 layers of hidden 2048 / MLP 5632, 32 heads over 4 KV heads.
LLAMA_1B = dict(
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
)
# Deep and narrow: 64 layers, ~3.7 GB fp32, so memory is dominated by layer weights.
LLAMA_64L = dict(
    vocab_size=32000, hidden_size=1024, intermediate_size=3584, num_hidden_layers=64,
    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
)
SPECS = {"llama-1b-random": LLAMA_1B, "llama-64l-random": LLAMA_64L}


def param_count(cfg: dict) -> int:
    """Parameters of a Llama config (untied embeddings, no biases)."""
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return n * layer + 2 * cfg["vocab_size"] * h + h


def _child(*args: str) -> str:
    """Run this file with `args` in a child process; its last stdout line."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def default_model() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted into the user cache if needed."""
    return Path(_child("--default"))


def random_model(name: str, log=print) -> Path:
    """The random model `name` of SPECS, built (in a child process) on first use."""
    out = MODELS / name
    if not (out / ".complete").is_file():
        cfg = SPECS[name]
        gb = param_count(cfg) * 4 / 1e9
        log(f"building {name}: {param_count(cfg) / 1e9:.2f} B params, {gb:.2f} GB fp32 ...")
        _child("--build", name)
    return out


def _build(name: str) -> Path:
    from tests.fixtures.tiny_models import make_tiny_model

    cfg, out = SPECS[name], MODELS / name
    make_tiny_model(out, "llama", **cfg)
    (out / ".complete").write_text(json.dumps({"params": param_count(cfg), **cfg}))
    return out


def model_bytes(model_dir: Path) -> int:
    """Size of a model's weights: its safetensors files, or the GGUF an imported dir points
    at (the default model's dir holds no weights, so it read 0.0 GB)."""
    from core.model.gguf_weights import is_gguf_dir, read_pointer

    if is_gguf_dir(model_dir):
        return read_pointer(model_dir)["size"]
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--default"]:
        from core.model.model_dir import resolve_model

        print(resolve_model(None))
    elif argv[:1] == ["--build"]:
        print(_build(argv[1]))
    else:
        for n in SPECS:
            p = random_model(n)
            print(f"{n}: {model_bytes(p) / 1e9:.2f} GB at {p}")


if __name__ == "__main__":
    _main(sys.argv[1:])
