"""`tpi-chat --self-test`: prove this installation (or frozen bundle) can run a split model.

Headless and offline. Builds a tiny random Llama model (transformers config, random
weights, a byte-level BPE tokenizer trained on the spot) in a temp dir, then generates 8
greedy tokens three ways: transformers' own forward, 1 rank, and 2 ranks (rank 1 a real
worker process started exactly as the app starts it). All three must give the same ids.
Everything it writes, the shard cache included, lives in that temp dir, so it also works
with an empty environment (no HOME).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

TOKENS = 8
PROMPT = "What is the capital of France? The capital of France is"
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is the capital of France? "
    "The capital of France is Paris. A tensor parallel model splits every layer across "
    "all the devices of a home, so that small machines can run a model together. "
)


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Save a random 2-layer Llama (vocab 512) and its tokenizer into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=192,
                      num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=256, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1: perturb them so a wrong split would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out_dir, safe_serialization=True)
    _save_tokenizer(out_dir)
    return out_dir


def _save_tokenizer(out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_CORPUS] * 4, trainers.BpeTrainer(
        vocab_size=512, min_frequency=2, special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=_SPECIALS[1],
                            eos_token=_SPECIALS[2], pad_token=_SPECIALS[0]
                            ).save_pretrained(str(out_dir))


def reference_ids(model_dir: Path, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy ids from transformers' own forward pass (full recompute, no cache)."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def cluster_ids(model_dir: Path, prompt_ids: list[int], n: int, ranks: int) -> list[int]:
    """Greedy ids from a LocalCluster of `ranks` ranks (ranks-1 worker processes)."""
    from core.engine.generate import Generator
    from core.engine.options import RunOptions
    from core.engine.sampler import SamplingParams
    from core.ranks.local_cluster import LocalCluster

    cluster = LocalCluster(model_dir, RunOptions(ranks=ranks, context=256)).start()
    try:
        gen = Generator(cluster, eos_ids=set())  # no early stop: exactly n tokens
        params = SamplingParams(temperature=0, max_new_tokens=n)
        return gen.generate(prompt_ids, params).token_ids
    finally:
        cluster.close()


def run_self_test(work: Path) -> str:
    """Run every check inside `work`; the verdict line, or AssertionError with the reason."""
    from core.kernels import library
    from core.model.tokenizer import ChatTokenizer

    t0 = time.perf_counter()
    model_dir = build_tiny_model(work / "tiny-llama")
    prompt_ids = ChatTokenizer(model_dir).encode(PROMPT)
    ref = reference_ids(model_dir, prompt_ids, TOKENS)
    one = cluster_ids(model_dir, prompt_ids, TOKENS, ranks=1)
    two = cluster_ids(model_dir, prompt_ids, TOKENS, ranks=2)
    if len(two) != TOKENS:
        raise AssertionError(f"2 ranks produced {len(two)} tokens instead of {TOKENS}")
    if two != one:
        raise AssertionError(f"2 ranks gave {two}, 1 rank gave {one}")
    if one != ref:
        raise AssertionError(f"1 rank gave {one}, transformers gave {ref}")
    secs = time.perf_counter() - t0
    k = library.kernels()
    kernels = f"compiled kernels, {k.level}" if k else "torch kernels"
    return (f"self-test passed: 2 ranks agree with 1 rank and transformers "
            f"on {TOKENS} tokens ({secs:.1f} s, {kernels})")


def _isolate(work: Path) -> None:
    """Point every cache at `work` and stay offline; worker processes inherit this."""
    os.environ["TPI_CHAT_CACHE"] = str(work / "cache")
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # one verdict line, no bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    """Print one verdict line; 0 when every check passed, 1 otherwise."""
    with tempfile.TemporaryDirectory(prefix="tpi-chat-selftest-") as tmp:
        work = Path(tmp)
        _isolate(work)
        try:
            print(run_self_test(work), flush=True)
            return 0
        except Exception as e:  # any failure is the verdict, not a traceback
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"self-test FAILED: {type(e).__name__}: {reason}", file=sys.stderr,
                  flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
