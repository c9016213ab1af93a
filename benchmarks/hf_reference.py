"""The reference: transformers' own fp32 `generate`, greedy, in a process of its own.

Prompt ids come from our ChatTokenizer (chat template, or --raw text) so both engines see
the same ids. Timings, as the benchmark brief defines them:
- ttft_ms: a generate() with max_new_tokens=1, the first call in the process (cold, like
  our CLI's first step); ttft_warm_ms: the same call again.
- decode_ms_per_token: (t(N) - t(1)) / (N - 1), both warm, N the tokens actually made.

    python benchmarks/hf_reference.py --model DIR --prompt TEXT [--raw] [--max-new-tokens 64]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _prompt_ids(tok, prompt: str, raw: bool) -> list[int]:
    if raw:
        return tok.encode(prompt)
    return tok.apply_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from core.model.reference import transformers_model
    from core.model.tokenizer import ChatTokenizer

    torch.set_num_threads(args.threads)
    tok = ChatTokenizer(args.model)
    ids = _prompt_ids(tok, args.prompt, args.raw)
    t0 = time.perf_counter()
    model = transformers_model(args.model)  # an imported GGUF too (its weights stay in it)
    load_s = time.perf_counter() - t0
    inp = torch.tensor([ids])
    eos = sorted(tok.eos_ids)
    kw = dict(attention_mask=torch.ones_like(inp), do_sample=False, temperature=None,
              top_p=None, top_k=None, eos_token_id=eos, pad_token_id=eos[0])

    def gen(n: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(inp, max_new_tokens=n, **kw)
        return (time.perf_counter() - t) * 1000, out[0, len(ids):].tolist()

    ttft_cold, _ = gen(1)
    ttft_warm, _ = gen(1)
    t_n, new = gen(args.max_new_tokens)
    n = len(new)
    print(json.dumps({
        "engine": "transformers",
        "token_ids": new,
        "prompt_tokens": len(ids),
        "ttft_ms": round(ttft_cold, 3),
        "ttft_warm_ms": round(ttft_warm, 3),
        "decode_ms_per_token": round((t_n - ttft_warm) / (n - 1), 3) if n > 1 else None,
        "load_s": round(load_s, 2),
        "threads": args.threads,
        "peak_rss_mb": [round(_hwm_mb(), 1)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
