"""One engine, one process, one measurement for bench_llamacpp.py; prints one JSON line.

Every engine is driven the same way on the same token ids: greedy, exactly N new tokens
(EOS ignored, so all engines do the same work), torch/ggml threads = --threads.
  decode_ms_per_token  (t(last token) - t(first token)) / (N - 1)
  ttft_ms              prompt in -> first token chosen, short chat prompt
  ttft_512_ms          a 512-token prompt in -> first token chosen
All after one warm-up pass of each (first-call allocations are not what we compare).

    python benchmarks/llamacpp_worker.py --engine ours --dtype int8 --ids IDS.json
    python benchmarks/llamacpp_worker.py --engine ours --dtype auto --gguf F.gguf --ids IDS.json
    python benchmarks/llamacpp_worker.py --engine llama --gguf F.gguf --ids IDS.json
    python benchmarks/llamacpp_worker.py --engine transformers --ids IDS.json
IDS.json holds {"prompt": [...], "long": [...], "model_dir": "..."}. Ours runs the model dir
of IDS.json, or with --gguf that file's own import (pre-split by bench_llamacpp.py), so
`--dtype auto` keeps the file's quantization.
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


class Ours:
    """Our engine at 1 rank, all resident, in this process (no CLI start-up in the timing)."""

    def __init__(self, model_dir: str, dtype: str | None, threads: int):
        from core.engine.options import RunOptions
        from core.ranks.local_cluster import LocalCluster

        # no dtype: the default, and the only choice of checkouts older than --dtype
        kw = {"dtype": dtype} if dtype else {}
        self.cluster = LocalCluster(Path(model_dir),
                                    RunOptions(ranks=1, threads=threads, **kw)).start()
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0  # the KV cache is simply overwritten from position 0

    def feed(self, ids: list[int]) -> int:
        logits = self.cluster.step(ids, self.pos)
        self.pos += len(ids)
        return int(logits.argmax())


class LlamaCpp:
    """llama-cpp-python on one GGUF; logits of the last token read straight from ggml."""

    def __init__(self, gguf: str, threads: int):
        import numpy as np
        from llama_cpp import Llama

        self.np = np
        self.llm = Llama(gguf, n_ctx=1024, n_batch=512, n_threads=threads,
                         n_threads_batch=threads, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def reset(self) -> None:
        self.llm.reset()

    def feed(self, ids: list[int]) -> int:
        self.llm.eval(ids)
        logits = self.np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
        return int(logits.argmax())


def _measure(engine, prompt: list[int], long: list[int], n: int) -> dict:
    def generate() -> tuple[list[int], float, float]:
        engine.reset()
        t0 = time.perf_counter()
        toks = [engine.feed(prompt)]
        t1 = time.perf_counter()
        for _ in range(n - 1):
            toks.append(engine.feed([toks[-1]]))
        return toks, (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000 / (n - 1)

    def prefill_long() -> float:
        engine.reset()
        t0 = time.perf_counter()
        engine.feed(long)
        return (time.perf_counter() - t0) * 1000

    generate(), prefill_long()  # warm-up
    toks, ttft, decode = generate()
    return {"token_ids": toks, "ttft_ms": round(ttft, 3), "decode_ms_per_token": round(decode, 3),
            "ttft_512_ms": round(prefill_long(), 3)}


def _transformers(model_dir: str, prompt: list[int], long: list[int], n: int) -> dict:
    """transformers' own fp32 generate(); decode = (t(N) - t(1)) / (N - 1)."""
    import torch

    from core.model.reference import transformers_model

    model = transformers_model(Path(model_dir))  # an imported GGUF has no weight files

    def gen(ids: list[int], k: int) -> tuple[float, list[int]]:
        inp = torch.tensor([ids])
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False,
                                 max_new_tokens=k, min_new_tokens=k, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=0)
        return (time.perf_counter() - t) * 1000, out[0, len(ids):].tolist()

    gen(prompt, 2), gen(long, 1)  # warm-up
    ttft, _ = gen(prompt, 1)
    t_n, toks = gen(prompt, n)
    return {"token_ids": toks, "ttft_ms": round(ttft, 3),
            "decode_ms_per_token": round((t_n - ttft) / (n - 1), 3),
            "ttft_512_ms": round(gen(long, 1)[0], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["ours", "llama", "transformers"], required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    spec = json.loads(Path(args.ids).read_text())
    prompt, long = spec["prompt"], spec["long"]

    import torch

    torch.set_num_threads(args.threads)
    if args.engine == "transformers":
        res = _transformers(spec["model_dir"], prompt, long, args.new_tokens)
    else:
        if args.engine == "ours":
            model_dir = spec["model_dir"]
            if args.gguf:
                from core.model.model_dir import resolve_model

                model_dir = str(resolve_model(args.gguf))
            engine = Ours(model_dir, args.dtype, args.threads)
        else:
            engine = LlamaCpp(args.gguf, args.threads)
        res = _measure(engine, prompt, long, args.new_tokens)
    print(json.dumps({"engine": args.engine, "prompt_tokens": len(prompt),
                      "long_tokens": len(long), **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
