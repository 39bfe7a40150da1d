"""GGUF files of a stock GPT-2 for llama.cpp: F32 and F16 written through the `gguf` package's writer,
the quantised types made from the F32 file by llama.cpp's own `llama-quantize`, as llama.cpp's users do.

llama.cpp's GPT-2 architecture has one residual width, so only a stock model goes there: the teacher
and the `slim`, `depth` and `depth+slim` students. llama.cpp's own `convert_hf_to_gguf.py` names a
BPE tokenizer's pre-tokenizer by hashing what it makes of a test string, and refuses every vocabulary
it has not seen (the reference teacher's 8,192-token one among them); clidep reads the pre-tokenizer
from `tokenizer.json` instead and names it only where it is GPT-2's (byte-level, GPT-2's split
regex, no prefix space), and validation then holds llama.cpp's tokenisation of a text to transformers'.

Types per tensor are llama.cpp's: in F32 and F16 files its converter's (1-D tensors, norms and the
position embeddings F32, every other weight the file's type), in Q8_0 and Q4_0 llama-quantize's own
choices (for Q4_0 the tied embedding/head table in Q6_K, a row that does not split into blocks in
F16). The gguf package's Q4_0 writer stores the table in Q8_0 (it has no Q6_K), 13 MB more at
GPT-2-medium's 50,257 x 1,024, read by every decoded token: benchmarks/results/gguf_peer.md.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError, NoMatrixOfType
from clidep.export.config import GGUF_TYPES, ExportConfig

#: The GGUF types clidep writes, by --gguf-types name. F32 is always written: it is the exact reference
#: that the others are checked against, as model.onnx is for the ONNX files, and what llama-quantize reads.
#: The k-quants are llama-quantize's own mixes, the types llama.cpp's users mostly pick (Q4_K_M above all); on
#: the reference teacher against its F32 file in llama.cpp: Q8_0 -0.00%, Q6_K -0.08%, Q5_K_M +0.06%, Q4_K_M
#: +0.01%, Q4_0 +0.17%, at 13.2, 10.4, 9.5, 8.7 and 8.0 MB of 47.1 (benchmarks/results/gguf_types.md).
TYPES = GGUF_TYPES
WRITTEN = ("f32", "f16")  # by the gguf package's writer; the others by llama-quantize
#: Weights per block of each quantised type (ggml's QK8_0, QK4_0, QK_K): a row that does not split into these
#: falls back to another type (F16 for the 32-weight types; for the k-quants llama-quantize's legacy fallbacks).
BLOCK = {"q8_0": 32, "q4_0": 32, "q6_k": 256, "q5_k_m": 256, "q4_k_m": 256}
#: The tensor types a file of each name holds: the k-quant mixes keep some matrices one step up (Q6_K), and Q4_0
#: keeps the tied embedding/head table, llama.cpp's output, in Q6_K.
FAMILY = {
    "f32": ("F32",),
    "f16": ("F16",),
    "q8_0": ("Q8_0",),
    "q6_k": ("Q6_K",),
    "q5_k_m": ("Q5_K", "Q6_K"),
    "q4_k_m": ("Q4_K", "Q6_K"),
    "q4_0": ("Q4_0", "Q6_K"),
}
#: transformers' names of the GELU llama.cpp's GPT-2 computes (the tanh form).
GGML_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
STOCK_METHODS_HINT = "--method slim, depth, depth+slim or grid (or the teacher itself)"


def check_stock(config) -> None:
    """ClidepError unless CONFIG (a CLIGPT2Config) is a plain GPT-2, the only form llama.cpp's GPT-2 takes."""
    from clidep.model.convert import is_stock

    if config.activation_function not in GGML_GELU:
        raise ClidepError(
            f"--gguf: llama.cpp's GPT-2 computes GELU in its tanh form (gelu_new); this model's MLPs use "
            f"{config.activation_function}"
        )
    if not is_stock(config):
        raise ClidepError(
            f"--gguf needs a stock GPT-2 (one residual width): this model's blocks have widths "
            f"{sorted(set(config.layer_widths))} and head sizes {sorted(set(config.layer_head_dims))}, which "
            f"llama.cpp's GPT-2 cannot hold; compress with {STOCK_METHODS_HINT}"
        )


def types_written(asked: tuple[str, ...]) -> tuple[str, ...]:
    """The types --gguf writes for --gguf-types ASKED: in TYPES order, f32 first (always written, the
    reference the others are checked against)."""
    return tuple(t for t in TYPES if t in asked or t == "f32")


def pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a tokenizer.json: 'gpt-2', or ClidepError saying what it is."""
    model = tokenizer_json.get("model", {}).get("type")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    gpt2 = (
        model == "BPE"
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and not tokenizer_json.get("normalizer")
    )
    if not gpt2:
        raise ClidepError(
            f"--gguf: the tokenizer ({model}, pre-tokenizer {pre.get('type')}) is not GPT-2's byte-level BPE, "
            "the only one clidep names for llama.cpp"
        )
    return "gpt-2"


def write_gguf(model, tokenizer_dir: Path, dst: Path, kind: str, name: str) -> dict:
    """MODEL (a stock CLIGPT2LMHeadModel) as a GGUF file of KIND (f32 or f16) at DST, with the tokenizer saved in
    TOKENIZER_DIR; returns describe(DST)."""
    import gguf

    c = model.config
    check_stock(c)
    if kind not in WRITTEN:
        raise ValueError(f"write_gguf writes {', '.join(WRITTEN)}; {kind} is made by quantize_gguf")
    qtype = _qt(kind.upper())
    writer = gguf.GGUFWriter(str(dst), "gpt2")
    writer.add_name(name)
    writer.add_block_count(c.n_layer)
    writer.add_context_length(c.n_positions)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.inner(0))  # n_inner where it is not 4 x n_embd, which llama.cpp reads here
    writer.add_head_count(c.n_embd // c.layer_head_dims[0])
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if kind == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _add_vocab(writer, tokenizer_dir, c.vocab_size)

    # Tensor infos first, then the data a tensor at a time: one tensor in memory beside the model, not a copy
    # of the whole model in the file's type (1.4 GB at GPT-2-medium in F32).
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, c.n_layer)
    planned = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp reads the head from token_embd where output.weight is absent
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ClidepError(f"--gguf: no llama.cpp GPT-2 tensor for {hf_name}")
        t = _tensor_type(new, tuple(tensor.shape), qtype)
        planned.append((new, tensor, t))
        dtype = np.dtype(np.float32 if t == _qt("F32") else np.float16)
        writer.add_tensor_info(new, tuple(tensor.shape), dtype, tensor.numel() * dtype.itemsize, raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor, t in planned:
        data = tensor.detach().float().numpy()  # (out, in): llama.cpp's order (GPT-2's converter transposes Conv1D)
        writer.write_tensor_data(gguf.quants.quantize(data, t))
    writer.close()
    return describe(dst)


def quantize_gguf(f32: Path, dst: Path, kind: str) -> dict:
    """The F32 file at F32 quantised to KIND (q8_0, q6_k, q5_k_m, q4_k_m or q4_0) at DST by llama-quantize;
    returns describe(DST). NoMatrixOfType where no weight matrix holds KIND's types."""
    from clidep.runtime import llamacpp

    llamacpp.quantize(f32, dst, kind.upper())
    record = describe(dst)
    if not record["matrices_of_type"]:
        dst.unlink()
        raise NoMatrixOfType(
            f"gguf/model.{kind}.gguf would hold no {kind.upper()} tensor: llama-quantize kept all "
            f"{record['matrices']} weight matrices in {'/'.join(record['float_types'] + record['fallback_types'])} "
            f"(their rows do not split "
            f"into its {BLOCK[kind]}-weight blocks); drop {kind} from --gguf-types or use a student whose widths "
            f"are multiples of {BLOCK[kind]}"
        )
    return record


def describe(path: Path) -> dict:
    """A GGUF file's types as the gguf package reads them: {"tensor_types": {GGML type: count},
    "embedding_and_head": the tied table's type, "matrices": its weight matrices (2-D, but the position
    embeddings, which llama.cpp keeps F32), "matrices_of_type": how many hold the file's own type (its name's),
    "float_matrices": how many a quantised file left in F16/F32 (llama-quantize's fallback for rows that do not
    split into blocks), "fallback_matrices": how many it put in another quantised type (the k-quants'
    fallbacks), with the types of each}."""
    import gguf

    tensors = gguf.GGUFReader(str(path)).tensors
    counts = Counter(t.tensor_type.name for t in tensors)
    table = next(t.tensor_type.name for t in tensors if t.name == "token_embd.weight")
    family = FAMILY[path.name.split(".")[-2]]
    matrices = [t.tensor_type.name for t in tensors if len(t.shape) >= 2 and t.name != "position_embd.weight"]
    floats = [] if family[0] in ("F16", "F32") else sorted({m for m in matrices if m in ("F16", "F32")})
    return {
        "tensor_types": dict(sorted(counts.items())),
        "embedding_and_head": table,
        "matrices": len(matrices),
        "matrices_of_type": sum(m in family for m in matrices),
        "float_matrices": sum(m in floats for m in matrices),
        "float_types": floats,
        "fallback_matrices": sum(m not in family and m not in floats for m in matrices),
        "fallback_types": sorted({m for m in matrices if m not in family and m not in floats}),
    }


def _qt(name: str):
    import gguf

    return getattr(gguf.GGMLQuantizationType, name)


def _tensor_type(name: str, shape: tuple, qtype):
    """The type llama.cpp's converter gives tensor NAME of SHAPE in a file of QTYPE (F32 or F16)."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or name == "position_embd.weight":
        return _qt("F32")
    return qtype


def _add_vocab(writer, tokenizer_dir: Path, vocab_size: int) -> None:
    """tokenizer.ggml.*: GPT-2 BPE, its pre-tokenizer, tokens by id (special ones CONTROL, holes UNUSED),
    merges and special ids (the gguf package's SpecialVocab reads them from the saved tokenizer)."""
    import gguf

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = pre_tokenizer(spec)
    by_id = {i: tok for tok, i in spec["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    by_id.update(special)
    if max(by_id) >= vocab_size:
        raise ClidepError(
            f"--gguf: the tokenizer has ids up to {max(by_id)}, past the model's vocabulary of {vocab_size}"
        )
    tokens, types = [], []
    for i in range(vocab_size):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(
            gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True).add_to_gguf(writer)


def write_files(model, tmp: Path, c: ExportConfig, name: str, ids, reference, log) -> tuple[list[dict], object]:
    """--gguf: the GGUF files in TMP/gguf/ (F32 first) and PyTorch's answers for their checks:
    (manifest entries, GGUFReference)."""
    from clidep.export.gguf import WRITTEN, quantize_gguf, types_written, write_gguf
    from clidep.export.gguf_check import gguf_reference

    folder = tmp / "gguf"
    folder.mkdir()
    files = []
    for kind in types_written(c.gguf_types):
        log(f"writing gguf/model.{kind}.gguf")
        t0 = time.perf_counter()
        dst = folder / f"model.{kind}.gguf"
        record = (
            write_gguf(model, tmp, dst, kind, name)
            if kind in WRITTEN
            else quantize_gguf(folder / "model.f32.gguf", dst, kind)
        )
        off = record["float_matrices"] + record["fallback_matrices"]
        if off:
            log(
                f"gguf/model.{kind}.gguf: {off} of {record['matrices']} weight matrices in "
                f"{'/'.join(record['float_types'] + record['fallback_types'])}: llama-quantize's fallback for rows "
                f"that do not split into their type's blocks ({BLOCK[kind]} weights; Q6_K, the table's type in "
                "Q4_0, 256); the manifest records each type"
            )
        files.append(
            {"file": f"model.{kind}.gguf", "type": kind, "seconds": round(time.perf_counter() - t0, 2), **record}
        )
    return files, gguf_reference(model, ids, reference)
