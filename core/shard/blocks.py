"""Names and contents of the per-rank block files: the contract between splitter and engine.

A rank's shard dir holds one safetensors file per block plus `manifest.json`. The memory
scheduler streams blocks in `block_order` (attention then MLP, layer by layer).

Matrices are stored transposed from HF's nn.Linear layout, as [in, out], so the engine
computes `x @ w`: for one decode token (a GEMV that streams every weight from RAM) this
layout measured ~30% faster than F.linear on [out, in] with this torch/MKL on CPU.

Block "L{i:03d}.attn" (rank holding h_kv KV heads, hq = h_kv * group query heads, hd = head_dim,
D = hidden size), projections fused at split time so a rank does one matmul, not three:
  norm    [D]                       input RMSNorm weight (replicated)
  wqkv    [D, (hq + 2*h_kv) * hd]   columns: this rank's q heads, then its k heads, then its v
  bqkv    [(hq + 2*h_kv) * hd]      only when the model has q/k/v bias (Qwen2)
  wo      [hq * hd, D]              the o_proj rows of this rank's heads (row-parallel)
  q_norm  [hd], k_norm [hd]         only for Qwen3 (per-head RMSNorm), replicated
A rank with zero KV heads gets a block holding only `norm`; it adds zeros to the allreduce.

Block "L{i:03d}.mlp" (rank holding C intermediate columns):
  norm       [D]        post-attention RMSNorm weight (replicated)
  w_gate_up  [D, 2*C]   columns: gate_proj rows of its columns, then up_proj rows
  w_down     [C, D]     down_proj columns (row-parallel)
A rank with zero columns gets empty w_gate_up [D, 0] and w_down [0, D]: the matmuls yield zeros.

Rank 0 only, always resident (not streamed):
  "embed": embed [V, D]
  "head":  norm [D] (final RMSNorm), lm_head [D, V] (the tied embedding when there is no
           embed block)

Shard dtypes (the manifest's `dtype`): float32, bfloat16 and float16 store every tensor in
that dtype, in the layouts above. int8 is weight-only quantization (core/shard/quant.py):
each matrix M listed in MATRICES is stored as int8 in HF's [out, in] layout (the layout
torch's int8 weight-only matmul takes) plus `M_scale` [out] float32, one scale per output
channel; norms and biases stay float32. (lm_head int8 is [V, D]: row t is token t's
embedding, so a tied embedding is a row lookup.)

Quantized shard dtypes (q8_0, q4_0, q4_1 and gguf, see core/shard/qformats.py) store each
matrix M in HF's [out, in] layout as llama.cpp's blocks: one or more uint8 tensors
`M.{i}.{format}` [rows_i, row bytes], whose rows stacked in order i make M (a fused matrix
whose source tensors came in different formats, such as a Q4_K_M file's q/k in 4 bits and
v in 6, keeps one part per format). Norms and biases stay float32.
"""

from __future__ import annotations

import torch

from core.shard.layout import FLOAT_DTYPES, is_quantized
from core.shard.qformats import FORMATS

MANIFEST = "manifest.json"
FORMAT_VERSION = 3  # 2: matrices stored [in, out]; 3: int8 shards ([out, in] + scales)
# (quantized dtypes came later under version 3: older code refuses their dtype by name)
MATRICES = frozenset({"wqkv", "wo", "w_gate_up", "w_down", "lm_head", "embed"})
SCALE = "_scale"  # suffix of an int8 matrix's per-output-channel scales
EMBED = "embed"
HEAD = "head"


def stored_dtype(shard_dtype: str, tensor: str) -> torch.dtype:
    """The dtype tensor `tensor` of a block has in a shard of dtype `shard_dtype`."""
    if is_quantized(shard_dtype):
        return torch.uint8 if parse_part(tensor) else torch.float32
    if shard_dtype != "int8":
        return FLOAT_DTYPES[shard_dtype]
    return torch.int8 if tensor in MATRICES else torch.float32


def part_name(matrix: str, index: int, fmt: str) -> str:
    """'wqkv', 0, 'q4_1' -> 'wqkv.0.q4_1' (see the module docstring)."""
    return f"{matrix}.{index}.{fmt}"


def parse_part(tensor: str) -> tuple[str, int, str] | None:
    """'wqkv.0.q4_1' -> ('wqkv', 0, 'q4_1'); None for a name that is not a matrix part."""
    matrix, _, rest = tensor.partition(".")
    index, _, fmt = rest.partition(".")
    if matrix not in MATRICES or not index.isdigit() or fmt not in FORMATS:
        return None
    return matrix, int(index), fmt


def attn_block(layer: int) -> str:
    return f"L{layer:03d}.attn"


def mlp_block(layer: int) -> str:
    return f"L{layer:03d}.mlp"


def block_order(num_layers: int) -> list[str]:
    """The order the engine visits (and the scheduler streams) a rank's layer blocks."""
    out = []
    for i in range(num_layers):
        out += [attn_block(i), mlp_block(i)]
    return out


def block_file(name: str) -> str:
    return f"{name}.safetensors"
