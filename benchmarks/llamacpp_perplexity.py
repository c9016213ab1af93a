"""llama.cpp's perplexity on a GGUF, scored exactly as `tpi-chat perplexity` scores ours.

    python benchmarks/llamacpp_perplexity.py --gguf F.gguf --text T.txt [--context 512]
    python benchmarks/llamacpp_perplexity.py --cap T.txt --windows 8 --out CAPPED.txt

The text is tokenized by our tokenizer (the GGUF's own import) with the BOS rule of
core/perplexity_cli.py (`model_bos`), cut into windows by core/engine/perplexity.py
(`text_tokens`, `windows`: BOS replacing each window's first token when the model adds
one), and every window's logits are scored by the same `window_nll` / `Running` (float64
log-softmax of positions C/2 .. C-2), so the only thing that differs from ours is the
engine that computes the logits: llama-cpp-python with logits_all=True, each window
evaluated from position 0 after a reset and a cleared KV cache. llama.cpp's own tokenizer
and BOS rule are checked against ours and reported (`same_tokens`, `llama_add_bos`).

--cap writes the first N windows' worth of the text (cut at a line end past N windows and
short of N + 1), so `tpi-chat perplexity`, which scores every window of its file, scores
the same N windows; it checks the cut text tokenizes to the same first N windows.
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


def _tokens(model_dir: Path, text: str) -> tuple[list[int], int | None]:
    from core.engine import perplexity as ppl
    from core.model.tokenizer import ChatTokenizer
    from core.perplexity_cli import model_bos

    tok = ChatTokenizer(model_dir)
    bos = model_bos(tok)
    return ppl.text_tokens(tok.encode(text), bos), bos


def cap_text(model_dir: Path, src: Path, dst: Path, n: int, context: int) -> dict:
    from core.engine import perplexity as ppl
    from core.model.tokenizer import ChatTokenizer
    from core.perplexity_cli import read_text

    text = read_text(str(src))
    full, bos = _tokens(model_dir, text)
    if len(full) // context <= n:  # the whole text has no more than n windows
        dst.write_text(text, encoding="utf-8")
        return {"windows": len(full) // context, "tokens": len(full), "capped": False}
    tok = ChatTokenizer(model_dir)
    enc = tok.hf(text, add_special_tokens=False, return_offsets_mapping=True)
    lead = 1 if bos is not None else 0  # BOS is token 0 of `full`, not of the text's ids
    k = n * context + context // 4 - lead  # a text token a quarter window past n windows
    cut = text.find("\n", enc["offset_mapping"][k][1])
    cut = len(text) if cut < 0 else cut + 1
    capped = text[:cut]
    tokens, _ = _tokens(model_dir, capped)
    same = (ppl.windows(tokens, context, bos)[:n] == ppl.windows(full, context, bos)[:n])
    if len(tokens) // context != n or not same:
        raise SystemExit(f"cutting the text at {cut} chars gave {len(tokens)} tokens "
                         f"({len(tokens) // context} windows, same first windows: {same})")
    dst.write_text(capped, encoding="utf-8")
    return {"windows": n, "tokens": len(tokens), "capped": True, "chars": cut,
            "full_windows": len(full) // context, "full_tokens": len(full)}


def llama_perplexity(gguf: Path, text_path: Path, context: int, threads: int) -> dict:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from core.engine import perplexity as ppl
    from core.model.model_dir import resolve_model
    from core.perplexity_cli import read_text

    text = read_text(str(text_path))
    tokens, bos = _tokens(resolve_model(gguf), text)
    chunks = ppl.windows(tokens, context, bos)
    llm = Llama(str(gguf), n_ctx=context, n_batch=context, n_ubatch=context,
                logits_all=True, n_threads=threads, n_threads_batch=threads, verbose=False)
    llama_bos = llm._model.add_bos_token()
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)  # as llama-perplexity
    t0 = time.perf_counter()
    run = ppl.Running()
    for w in chunks:
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(w)
        logits = torch.from_numpy(np.array(llm.scores[:context], dtype=np.float32))
        run.add(*ppl.window_nll(logits, w))
    seconds = time.perf_counter() - t0
    first_diff = next((i for i, (a, b) in enumerate(zip(tokens, theirs, strict=False))
                       if a != b), None)
    return {"perplexity": round(run.perplexity, 6),
            "perplexity_error": round(run.perplexity_error, 6),
            "mean_nll": round(run.mean_nll, 8), "tokens": run.tokens, "windows": run.windows,
            "context": context, "text_tokens": len(tokens), "bos": bos is not None,
            "llama_add_bos": bool(llama_bos),
            "same_tokens": first_diff is None and len(theirs) == len(tokens),
            "first_token_difference": first_diff, "llama_text_tokens": len(theirs),
            "seconds": round(seconds, 3), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--text", type=Path)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cap", type=Path, help="text to cut to --windows windows")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.cap:
        from core.model.model_dir import resolve_model

        res = cap_text(resolve_model(args.gguf), args.cap, args.out, args.windows, args.context)
    else:
        import torch

        torch.set_num_threads(args.threads)
        res = llama_perplexity(args.gguf, args.text, args.context, args.threads)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
