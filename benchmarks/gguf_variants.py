"""F32, F16, Q8_0, Q4_0 and Q4_K_M GGUFs of a GGUF model, for llama.cpp beside our engine.

The shipped default model is Q4_1; for F32/F16/Q8_0/Q4_0 each tensor is dequantized
(gguf.quants) and written again at the wanted type with every KV metadata field copied, so
llama.cpp and our engine run exactly the same file. 1-D tensors (norms) stay F32, as
llama.cpp's own converter keeps them. In the Q4_0 file the token embedding, which is also
the output head (SmolLM2 ties them), stays Q8_0 as in the shipped Q4_1 file and as
llama.cpp's quantizer keeps an output tensor.

Q4_K_M is made by llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`,
default parameters, LLAMA_FTYPE_MOSTLY_Q4_K_M) from the F32 file, in a child process so
this one does not load libllama. Its mix depends on the shapes: Q4_K and Q6_K need rows of
a multiple of 256 weights, so on SmolLM2 (hidden 576) llama.cpp falls back to Q5_0 / Q8_0
for every matrix whose rows are 576 long; `tensor_types` lists what a file holds.

Files already in OUT_DIR are reused (delete one to rebuild it).

    python benchmarks/gguf_variants.py SRC.gguf OUT_DIR     # writes OUT_DIR/<stem>.<TYPE>.gguf
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_K_M")
# llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_0, MOSTLY_Q4_K_M
FILE_TYPE = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}
BY_LLAMA_CPP = {"Q4_K_M": "F32"}  # made by llama.cpp's quantizer from this variant
KEEP_Q8_0 = ("token_embd.weight", "output.weight")  # in a Q4_0 file, as llama.cpp keeps them


def variant_path(src: Path, out_dir: Path, qtype: str) -> Path:
    stem = src.name.removesuffix(".gguf").rsplit(".", 1)[0]  # drop the source's own ".Q4_1"
    return Path(out_dir) / f"{stem}.{qtype}.gguf"


def write_variant(src: Path, dst: Path, qtype: str) -> Path:
    """Re-encode every tensor of `src` as `qtype` (norms stay F32) into `dst`."""
    import gguf
    from gguf.quants import dequantize, quantize

    reader = gguf.GGUFReader(src, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    tmp = dst.with_suffix(".tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = FILE_TYPE[qtype] if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    target = gguf.GGMLQuantizationType[qtype]
    for t in reader.tensors:
        w = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)  # numpy order
        if w.ndim == 1 or qtype == "F32":
            writer.add_tensor(t.name, np.ascontiguousarray(w))
        elif qtype == "F16":
            writer.add_tensor(t.name, w.astype(np.float16))
        else:
            tt = (gguf.GGMLQuantizationType.Q8_0 if qtype == "Q4_0" and t.name in KEEP_Q8_0
                  else target)
            writer.add_tensor(t.name, quantize(w, tt), raw_dtype=tt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst


def quantize_with_llama_cpp(src: Path, dst: Path, qtype: str) -> Path:
    """`dst` = llama.cpp's own quantization of `src` (default parameters), in a child."""
    tmp = dst.with_suffix(".tmp")
    subprocess.check_call([sys.executable, __file__, "--llama-quantize", str(src), str(tmp),
                           str(FILE_TYPE[qtype])])
    tmp.replace(dst)
    return dst


def _llama_quantize(src: str, dst: str, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src}) returned {rc}")


def tensor_types(path: Path) -> dict[str, int]:
    """{ggml type: number of matrices} of a GGUF file (1-D tensors left out)."""
    import gguf

    r = gguf.GGUFReader(path, "r")
    return dict(Counter(t.tensor_type.name for t in r.tensors if len(t.shape) > 1))


def ours_formats(path: Path) -> dict[str, str]:
    """{ggml type: what our --dtype auto split makes of its matrices}, from the engine's own
    rule (core.model.gguf_convert.native_format); imports torch, so call it in a child."""
    import gguf

    from core.model.gguf_convert import CARRIED, native_format

    out = {}
    for name in tensor_types(path):
        t = gguf.GGMLQuantizationType[name]
        if name in ("F32", "F16", "BF16"):
            out[name] = "kept as floats"
            continue
        fmt = native_format(int(t)).name
        out[name] = ("kept byte for byte" if CARRIED.get(t) == fmt
                     else f"regrouped into {fmt}" if t == gguf.GGMLQuantizationType.Q4_K
                     else f"requantized to {fmt}")
    return out


def ensure_variants(src: Path, out_dir: Path) -> dict[str, Path]:
    """{type: path}, writing the files that are not there yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for q in TYPES:
        p = variant_path(src, out_dir, q)
        if not p.is_file():
            if q in BY_LLAMA_CPP:
                quantize_with_llama_cpp(paths[BY_LLAMA_CPP[q]], p, q)
            else:
                write_variant(src, p, q)
        paths[q] = p
    return paths


if __name__ == "__main__":
    if sys.argv[1] == "--llama-quantize":
        _llama_quantize(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "--ours":
        import json

        print(json.dumps(ours_formats(Path(sys.argv[2]))))
    else:
        for q, p in ensure_variants(Path(sys.argv[1]), Path(sys.argv[2])).items():
            print(q, p, p.stat().st_size, tensor_types(p))
