"""F32, F16 and Q8_0 GGUFs of a GGUF model, for llama.cpp side by side with our engine.

The shipped default model is Q4_1; each tensor is dequantized (gguf.quants) and written
again at the wanted type with every KV metadata field copied, so llama.cpp and our engine
(which imports the same file to fp32) run exactly the same weights. 1-D tensors (norms)
stay F32, as llama.cpp's own converter keeps them.

    python benchmarks/gguf_variants.py SRC.gguf OUT_DIR     # writes OUT_DIR/<stem>.<TYPE>.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TYPES = ("F32", "F16", "Q8_0")
FILE_TYPE = {"F32": 0, "F16": 1, "Q8_0": 7}  # llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_F16, ...


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
            writer.add_tensor(t.name, quantize(w, target), raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst


def ensure_variants(src: Path, out_dir: Path) -> dict[str, Path]:
    """{type: path}, writing the files that are not there yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for q in TYPES:
        p = variant_path(src, out_dir, q)
        paths[q] = p if p.is_file() else write_variant(src, p, q)
    return paths


if __name__ == "__main__":
    for q, p in ensure_variants(Path(sys.argv[1]), Path(sys.argv[2])).items():
        print(q, p, p.stat().st_size)
