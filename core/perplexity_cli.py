"""`tpi-chat perplexity --text FILE`: how well the model predicts a text, llama.cpp's way.

The model opens and starts as for `generate` (--model, --ranks, --dtype, --devices ...);
the text is scored in windows of --context tokens (core/engine/perplexity.py has the
method). Progress goes to stderr, one line a window; stdout gets the result, and with
--json ends with one JSON line. Ctrl-C stops after the window running, prints the
perplexity so far and exits 130.
"""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from pathlib import Path

from core.cli_commands import open_for, start_for
from core.engine import perplexity as ppl
from core.errors import TpiError
from core.model.config import load_config
from core.model.tokenizer import ChatTokenizer

INTERRUPTED = 130  # the shell's code for a run stopped by SIGINT


def read_text(path: str) -> str:
    """The file's text; TpiError naming the problem when it cannot be read as UTF-8."""
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TpiError(f"the text file {p} does not exist") from None
    except IsADirectoryError:
        raise TpiError(f"{p} is a folder; --text takes a text file") from None
    except UnicodeDecodeError as e:
        raise TpiError(f"{p} is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    except OSError as e:
        raise TpiError(f"cannot read the text file {p}: {e.strerror}") from None


def model_bos(tok: ChatTokenizer) -> int | None:
    """The BOS id when the model's tokenizer puts one in front of a text (llama.cpp's
    add_bos: true for Llama 2/3-style tokenizers, false for SmolLM2 / Qwen), else None."""
    bos = tok.hf.bos_token_id
    if bos is None:
        return None
    return bos if tok.hf.encode("a", add_special_tokens=True)[:1] == [bos] else None


def cmd_perplexity(args: Namespace) -> int:
    text = read_text(args.text)  # before minutes of model import: a typo fails at once
    ppl.check_context(args.context)  # the minimum now; the model's maximum once it is open
    t_load = time.perf_counter()
    model_dir, tok = open_for(args)
    ppl.check_context(args.context, load_config(model_dir).max_position_embeddings)
    bos = model_bos(tok)
    tokens = ppl.text_tokens(tok.encode(text), bos)
    chunks = ppl.windows(tokens, args.context, bos)
    cluster = start_for(args, model_dir)  # its KV cache is --context long: one window
    try:
        load_s = time.perf_counter() - t_load
        print(f"perplexity: {len(tokens)} tokens, {len(chunks)} windows of {args.context}, "
              f"{len(ppl.scored_positions(args.context))} tokens scored in each",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        show = _Progress(t0)
        try:
            run = ppl.score(cluster.step, chunks, on_window=show)
        except KeyboardInterrupt:
            run = show.last
            so_far = f"; perplexity so far {run.perplexity:.4f}" if run and run.tokens else ""
            print(f"\nperplexity: stopped after {run.windows if run else 0} of {len(chunks)} "
                  f"windows{so_far}", file=sys.stderr, flush=True)
            return INTERRUPTED
        seconds = time.perf_counter() - t0
        print(f"perplexity {run.perplexity:.4f} +/- {run.perplexity_error:.4f} over "
              f"{run.tokens} tokens ({run.windows} windows of {args.context}) "
              f"in {seconds:.1f} s", flush=True)
        if args.json:
            print(json.dumps({
                "perplexity": round(run.perplexity, 6),
                "perplexity_error": round(run.perplexity_error, 6),
                "mean_nll": round(run.mean_nll, 8),
                "tokens": run.tokens,
                "windows": run.windows,
                "context": args.context,
                "text_tokens": len(tokens),
                "bos": bos is not None,
                "dtype": args.dtype,
                "ranks": cluster.world_size,
                "seconds": round(seconds, 3),
                "load_seconds": round(load_s, 3),
            }), flush=True)
        return 0
    finally:
        cluster.close()


class _Progress:
    """on_window for ppl.score: `perplexity: [3/33] 12.3456 (1.4 s a window, 42 s left)`
    on stderr; keeps the last Running so an interrupted run can still say where it was."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.last: ppl.Running | None = None

    def __call__(self, run: ppl.Running, total: int) -> None:
        self.last = run
        each = (time.perf_counter() - self.t0) / run.windows
        print(f"perplexity: [{run.windows}/{total}] {run.perplexity:.4f} "
              f"({each:.2f} s a window, {each * (total - run.windows):.0f} s left)",
              file=sys.stderr, flush=True)
