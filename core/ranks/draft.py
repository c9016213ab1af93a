"""The draft model of speculative decoding: a whole model in this process, on rank 0's
machine only, with rank 0's threads.

    spec = start_speculator(model_dir, tokenizer, opts, world_size)  # opts.speculate/.draft

`--draft self` is the target itself, quantized: a GGUF keeps its own quantization (the
default model's Q4_1, whose one-rank split may already be cached), a float model becomes
Q8_0. `--draft MODEL` is a smaller model with the same tokenizer. The draft is timed
once at start (one token, then a few at once) so `auto` knows before the first reply
whether it can pay at all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psutil

from core.engine.head import Head
from core.engine.master import MasterRunner, SoloGroup
from core.engine.options import RunOptions
from core.engine.rank import RankRuntime
from core.engine.spec_control import KControl, parse_speculate
from core.engine.speculative import Speculator
from core.errors import ModelError, TpiError
from core.model.cache import cache_dir
from core.model.config import ModelConfig, load_config
from core.model.gguf_weights import is_gguf_dir, read_pointer
from core.model.model_dir import model_hash, resolve_model
from core.model.tokenizer import ChatTokenizer
from core.progress import Progress
from core.shard.layout import AUTO, FLOAT_DTYPES
from core.shard.plan import make_plan
from core.shard.splitter import split_model

log = logging.getLogger(__name__)
SELF = "self"
FLOAT_DRAFT = "q8_0"  # a float target's self-draft: a quarter of the bytes, close logits
SELF_ACCEPTANCE = 0.9  # the first guess of the share of draft tokens kept: the target's
OTHER_ACCEPTANCE = 0.7  # own weights agree with it more often than a smaller model does
TIMING_TOKENS = 8  # the multi-token step timed at start (the per-token slope)
FREE_SHARE = 0.6  # the draft may take at most this share of the memory free after the start
BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "q8_0": 8.5, "q4_0": 4.5,
        "q4_1": 5}


def self_draft_dtype(model_dir: Path, dtype: str) -> str:
    """The target's own quantization when it has one, else Q8_0."""
    if dtype == AUTO:
        return AUTO if is_gguf_dir(model_dir) else FLOAT_DRAFT
    return FLOAT_DRAFT if dtype in FLOAT_DTYPES and dtype != "int8" else dtype


def start_speculator(model_dir: Path, tokenizer: ChatTokenizer, opts: RunOptions,
                     world_size: int, progress: Progress | None = None,
                     devices: bool = False) -> Speculator | None:
    """The Speculator opts.speculate/opts.draft ask for, loaded and timed; None when it is
    off, or `auto` with a self-draft where no link costs anything: on one rank, or with
    every rank on this computer (`devices` False) and no emulated latency. A self-draft is
    the target's own work on rank 0's cores, and on this computer the ranks already share
    them; it only pays where a step waits on a network. (It would also write a second set
    of shards to the cache for nothing.)"""
    setting = parse_speculate(opts.speculate, opts.draft)
    no_links = world_size == 1 or (not devices and not opts.link_delay_ms)
    if setting.off or (setting.k is None and setting.draft == SELF and no_links):
        return None
    report = progress or (lambda stage, done, total: None)
    if setting.draft == SELF:
        draft_dir, dtype = Path(model_dir), self_draft_dtype(Path(model_dir), opts.dtype)
    else:
        draft_dir = resolve_model(setting.draft,
                                  lambda d, t: report("Importing draft model", d, t))
        check_same_vocab(model_dir, tokenizer, draft_dir)
        dtype = AUTO
    check_fits(draft_bytes(draft_dir, dtype))
    plan = make_plan(load_config(draft_dir), [1.0])
    split = split_model(draft_dir, plan, cache_dir() / "shards", dtype,
                        model_hash=model_hash(draft_dir),
                        progress=lambda d, t: report("splitting draft model", d, t))
    runner, rank = _load(split.rank_dirs[0], opts.context, report)
    try:
        one, slope = _time(runner)
    except BaseException:
        rank.close()
        raise
    log.info("draft model %s (%s): %.1f ms a token, +%.1f ms per extra token at once",
             setting.draft, dtype, one, slope)
    prior = SELF_ACCEPTANCE if setting.draft == SELF else OTHER_ACCEPTANCE
    return Speculator(runner, KControl(setting.k, one, slope, prior), close=rank.close)


def draft_bytes(model_dir: Path, dtype: str) -> int:
    """About how much memory the draft's weights take in `dtype` (a GGUF kept as it is:
    its file's size)."""
    if dtype in (AUTO, "gguf") and is_gguf_dir(model_dir):
        return read_pointer(model_dir)["size"]
    bits = BITS.get("float32" if dtype == AUTO else dtype, 32)
    return int(param_count(load_config(model_dir)) * bits / 8)


def param_count(cfg: ModelConfig) -> int:
    attn = cfg.hidden_size * cfg.head_dim * 2 * (cfg.num_heads + cfg.num_kv_heads)
    mlp = 3 * cfg.hidden_size * cfg.intermediate_size
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    return cfg.num_layers * (attn + mlp) + embed


def free_memory() -> int:
    return int(psutil.virtual_memory().available)


def check_fits(nbytes: int) -> None:
    """A whole copy of the model on this computer must leave room for everything else:
    a model spread over devices because it does not fit here gets no self-draft."""
    free = free_memory()
    if nbytes > FREE_SHARE * free:
        raise TpiError(f"the draft model needs ~{nbytes / 2**30:.2f} GB and this computer has "
                       f"{free / 2**30:.2f} GB free; use a smaller --draft MODEL, or "
                       "--speculate off")


def check_same_vocab(model_dir: Path, tokenizer: ChatTokenizer, draft_dir: Path) -> None:
    """A draft must speak the target's tokens: same vocabulary, same logits width."""
    draft_tok = ChatTokenizer(draft_dir)
    if draft_tok.hf.get_vocab() != tokenizer.hf.get_vocab():
        raise ModelError(f"the draft model {draft_dir.name} has another tokenizer than the "
                         "model; a draft must share its tokenizer (e.g. a smaller model of "
                         "the same family), or use --draft self")
    v_target, v_draft = load_config(model_dir).vocab_size, load_config(draft_dir).vocab_size
    if v_target != v_draft:
        raise ModelError(f"the draft model {draft_dir.name} has {v_draft} logits, the model "
                         f"{v_target}; they must match (use --draft self)")


def _load(rank_dir: Path, context: int, report: Progress) -> tuple[MasterRunner, RankRuntime]:
    # rank 0's threads (as its cluster set them): more, on cores the other ranks' processes
    # also spin on, measured 5-10x slower on a loaded machine (OpenMP barriers)
    rank = RankRuntime(rank_dir, SoloGroup(), None, context)
    try:
        rank.scheduler.wait_all_loaded(lambda d, t: report("loading draft model", d, t))
        return MasterRunner(Head(rank_dir, rank.manifest), rank, SoloGroup()), rank
    except BaseException:
        rank.close()
        raise


def _time(runner: MasterRunner) -> tuple[float, float]:
    """(ms of a one-token step, ms per extra token of a TIMING_TOKENS step), warm."""
    if runner.max_seq < TIMING_TOKENS + 2:
        raise TpiError("the context is too short for speculative decoding")
    ids = [0] * TIMING_TOKENS
    runner.step(ids, 0)  # warm-up: first touches of every weight page
    one = []
    for i in range(3):
        t = time.perf_counter()
        runner.step([0], TIMING_TOKENS + i)
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    runner.step(ids, 0)
    many = time.perf_counter() - t
    best = min(one) * 1000
    return best, max(0.0, (many * 1000 - best) / (TIMING_TOKENS - 1))
