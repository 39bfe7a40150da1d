"""Validation of the GGUF files in llama.cpp itself, as validate.py checks the ONNX files in ONNX Runtime.

Checks, cheap to expensive, each failure of 1-3 a typed error that fails the export:
1. llama.cpp's tokeniser, reading the F32 file's vocabulary, gives transformers' ids on a text sample;
2. F32 (an F32 KV cache, no flash attention): logits within LOGIT_ATOL of PyTorch's on a few prompts,
   batch 1, and PyTorch's greedy continuation;
3. F16 (llama.cpp's default cache): PyTorch's greedy continuation;
   in 2 and 3 a continuation may leave PyTorch's at a near-tie only, as the ONNX check allows
   (validate.greedy_flip: PyTorch's margin between its token and llama.cpp's within twice the file's largest
   logit difference on the prompts, since two logits each moved by that much can swap), and the swap is
   recorded (greedy_flip);
4. every file: perplexity on the export's check text and window, against the F32 file's, within the
   gate of its precision (the ONNX files' gates: Q8_0 as int8, Q4_0 as int4, F16 as fp16); a miss is
   recorded in the file's entry (gate_misses), and the export enforces it as it does the ONNX files' gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError, TokenizerMismatch, ValidationError, ValueMismatch
from clidep.export.config import PPL_GATES
from clidep.export.validate import greedy_flip, near_tie
from clidep.runtime.verify import file_sha256

#: llama.cpp's F32 logits against PyTorch's with GELU as llama.cpp computes it: ggml evaluates GELU from a
#: table of fp16 values at fp16-rounded inputs, which alone moves the reference teacher's logits by ~1.3e-3;
#: against PyTorch with that table the teacher's F32 file differs by 1.9e-4 to 9.2e-4 on the four prompts
#: (plain PyTorch: 1.1e-3 to 1.4e-3), so the gate is 2e-3, about twice the largest; a transposed or misnamed
#: tensor, a wrong epsilon or vocabulary moves them by tenths or whole units. Both differences are recorded.
LOGIT_ATOL = 2e-3
#: Each GGUF type's perplexity gate against the F32 file: the ONNX gate of the same precision.
GGUF_PPL_GATES = {
    "f16": PPL_GATES["fp16"],
    "q8_0": PPL_GATES["int8"],
    "q6_k": PPL_GATES["int8"],  # 6.6 bits a weight: held as 8-bit
    "q5_k_m": PPL_GATES["int4"],  # 5.5 and 4.8 bits a weight: held as 4-bit
    "q4_k_m": PPL_GATES["int4"],
    "q4_0": PPL_GATES["int4"],
}
#: Tokeniser edge cases beside the check text: contractions, digits, runs of spaces and newlines, non-ASCII.
TOKENIZER_SAMPLE = (
    "It's 2026: they'll pay $1,024.50 -- or won't?\n\n  Indented\tline,  two  spaces; "
    "naïve café, Zürich, 東京, emoji 🙂."
)


@dataclass
class GGUFReference:
    """PyTorch's answers for the GGUF checks, computed before the torch model is freed."""

    prompts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    # (ids (T,), logits with GELU as llama.cpp computes it (T, V), plain logits (T, V))
    greedy_prompt: np.ndarray | None = None  # (1, P)
    greedy: np.ndarray | None = None  # (1, P + N)
    gelu_table_shift: float = 0.0  # max |table - plain logits| over the prompts: what ggml's GELU alone moves
    # (N, V): PyTorch's logits (GELU as ggml computes it) before each continued token; None: no flip allowed
    greedy_logits: np.ndarray | None = None


def gguf_reference(model, text_ids: np.ndarray, reference) -> GGUFReference:
    """MODEL's logits on three 64-token prompts of TEXT_IDS and the batch-1 random prompt of REFERENCE (the
    ONNX checks' validate.Reference), whose greedy continuation is reused."""
    import torch

    prompts = [np.asarray(text_ids[i * 64 : (i + 1) * 64]) for i in range(3) if text_ids.size >= (i + 1) * 64]
    ids, *_ = next(case for case in reference.cases if case[0].shape[0] == 1)
    prompts.append(ids[0])
    out = GGUFReference(greedy_prompt=reference.prompt, greedy=reference.greedy)
    with torch.no_grad():
        for p in prompts:
            x = torch.from_numpy(p[None].astype(np.int64))
            plain = model(x, use_cache=False).logits[0].float().numpy()
            with _ggml_gelu(model):
                table = model(x, use_cache=False).logits[0].float().numpy()
            out.prompts.append((p, table, plain))
            out.gelu_table_shift = max(out.gelu_table_shift, float(np.abs(table - plain).max()))
        with _ggml_gelu(model):
            seq = torch.from_numpy(out.greedy[:, :-1].astype(np.int64))
            out.greedy_logits = model(seq, use_cache=False).logits[0, out.greedy_prompt.shape[1] - 1 :].float().numpy()
    return out


class _GgmlGelu:
    """GELU (tanh form) as ggml's CPU kernel computes it: x <= -10 -> 0, x >= 10 -> x, else the fp16 value of
    GELU at x rounded to fp16 (GGML_GELU_FP16's table)."""

    def __init__(self, act):
        self.act = act

    def __call__(self, x):
        import torch

        y = self.act(x.half().float()).half().float()
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


class _ggml_gelu:
    """Within the block, MODEL's MLPs compute GELU as ggml does (a stock model's activation is a plain module)."""

    def __init__(self, model):
        self.mlps = [m for m in model.modules() if hasattr(m, "act") and hasattr(m, "c_fc")]

    def __enter__(self):
        self.saved = [m.act for m in self.mlps]
        for m in self.mlps:
            object.__setattr__(m, "act", _GgmlGelu(m.act))

    def __exit__(self, *exc):
        for m, act in zip(self.mlps, self.saved):
            object.__setattr__(m, "act", act)


def check_gguf(
    files: list[dict], folder: Path, ref: GGUFReference, tokenizer, sample: str, ids: np.ndarray, context: int, log
) -> None:
    """Run the checks on FILES (manifest entries with "file" and "type", F32 first) in FOLDER, adding each one's
    figures to its entry; raise a ValidationError at the first failure. IDS, CONTEXT: the export's perplexity
    check (stride CONTEXT // 2); SAMPLE: text for the tokeniser check."""
    from clidep.perplexity import perplexity
    from clidep.runtime.llamacpp import LlamaCppModel

    n_ctx = max(context, ref.greedy.shape[1], max(p.size for p, *_ in ref.prompts))
    for entry in files:
        kind = entry["type"]
        exact = kind == "f32"
        model = LlamaCppModel(folder / entry["file"], n_ctx, exact_cache=exact)
        try:
            if exact:
                _check_tokenizer(model, tokenizer, sample + "\n" + TOKENIZER_SAMPLE)
            got = [model.logits(p[None])[0] for p, _, _ in ref.prompts]
            worst = max(float(np.abs(g - table).max()) for g, (_, table, _) in zip(got, ref.prompts))
            plain = max(float(np.abs(g - logits).max()) for g, (_, _, logits) in zip(got, ref.prompts))
            got = model.generate(ref.greedy_prompt, ref.greedy.shape[1] - ref.greedy_prompt.shape[1])
            flip = greedy_flip(got, ref.greedy, ref.greedy_prompt.shape[1], ref.greedy_logits, worst, "llama_cpp")
            entry.update(
                max_abs_logit_diff=worst,
                max_abs_logit_diff_plain_gelu=plain,
                greedy_match=flip is None,
                kv_cache="f32 (exact check)" if exact else "llama.cpp default (f16)",
            )
            if flip:
                entry["greedy_flip"] = flip
            if exact and worst > LOGIT_ATOL:
                raise ValueMismatch(
                    f"{entry['file']}: llama.cpp's logits differ from PyTorch's (GELU as ggml computes "
                    f"it) by up to {worst:.3g} (gate {LOGIT_ATOL:g})"
                )
            if kind in ("f32", "f16") and not near_tie(flip):
                raise ValueMismatch(
                    f"{entry['file']}: llama.cpp's greedy continuation {got[0].tolist()} differs from "
                    f"PyTorch's {ref.greedy[0].tolist()} at its token {flip['token']}, where PyTorch's margin "
                    f"is {flip['pytorch_margin']:.3g} (a near-tie is at most {flip['allowed_margin']:.3g}, twice "
                    f"the file's largest logit difference)"
                )
            log(f"{entry['file']}: perplexity in llama.cpp on {ids.size - 1:,} tokens")
            entry["ppl"] = perplexity(model.logits, ids, context, context // 2, 1).ppl
        finally:
            model.close()
        entry["ppl_delta"] = entry["ppl"] / files[0]["ppl"] - 1
        gate = GGUF_PPL_GATES.get(kind)
        if gate is not None:
            entry["ppl_gate"] = gate
            if entry["ppl_delta"] > gate:  # a quality gate: the export enforces it, or --allow-gate-miss marks it
                entry["gate_misses"] = [f"ppl {entry['ppl_delta']:+.2%} against the F32 file (gate +{gate:.1%})"]


def _check_tokenizer(model, tokenizer, text: str) -> None:
    """TokenizerMismatch, naming the first differing token, unless llama.cpp splits TEXT as TOKENIZER does."""
    want = tokenizer(text, add_special_tokens=False)["input_ids"]
    got = model.tokenize(text)
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise TokenizerMismatch(
            f"llama.cpp tokenises the check text differently from transformers from token {at}: "
            f"{got[at : at + 5]} vs {want[at : at + 5]}"
        )


def checked_record(tmp: Path, files: list[dict], ref, tokenizer, sample: str, ids, context: int, log) -> dict:
    """The manifest's gguf record: every file checked in llama.cpp (gguf_check), with its size and sha256;
    ClidepError where one fails."""
    from clidep.runtime.llama_bench import build_commit
    from clidep.runtime.llamacpp import VERSION

    folder = tmp / "gguf"
    try:
        check_gguf(files, folder, ref, tokenizer, sample, ids, context, log)
    except ValidationError as exc:
        raise ClidepError(f"export failed its GGUF check in llama.cpp: {exc}") from exc
    for f in files:
        f["size_bytes"] = (folder / f["file"]).stat().st_size
        f["sha256"] = file_sha256(folder / f["file"])
    return {
        "folder": "gguf",
        "llama_cpp": {"version": VERSION, "build": build_commit()},
        "gates": {
            "max_abs_logit_diff_f32": LOGIT_ATOL,
            "ppl_delta_vs_f32": GGUF_PPL_GATES,
            "greedy_match": ["f32", "f16"],
            "greedy_flip": "allowed where PyTorch's margin between the two tokens is within twice the file's "
            "max_abs_logit_diff (a near-tie)",
        },
        "gelu_table_shift": ref.gelu_table_shift,
        "tokenizer_check": "llama.cpp's ids equal transformers' on the check text's first 400 tokens and edge cases",
        "writers": {
            "f32, f16": "the gguf package's GGUFWriter",
            "the quantised types": "llama-quantize, from the F32 file",
        },
        "files": files,
    }
