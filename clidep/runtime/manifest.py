"""manifest.json, the record ``clidep export`` writes beside its files, as types: a ``Manifest`` holding one
``Variant`` per graph file. Written by export, read by bench, eval, generate and the checks in verify.

Fields are declared once here with their units. A key this version does not know (a field an older or newer
clidep wrote, or a variant's own settings such as int4's ``block_size``) is kept in ``extra`` and written
back unchanged (clidep/records.py), so every manifest written so far loads. The sub-records of the export's
optional steps (``kv_cache``, ``genai``, ``aarch64``, ``gguf``, ``executorch``) stay the dicts their own modules write and
document. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clidep.records import Record


@dataclass
class ExternalData(Record):
    """A graph's weights past 2 GB, in a file beside it."""

    file: str  # its name, beside the graph
    sha256: str  # hex digest of its bytes
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant(Record):
    """One graph file of an export and what the export measured of it."""

    file: str  # graph file name, relative to the export folder ("model.int4.onnx")
    precision: str  # fp32, int8-weight-only, int4-weight-only, fp16, int8-dynamic, int8-static-qdq
    seconds: float | None = None  # wall time to write the file, s
    max_abs_logit_diff: float | None = None  # against PyTorch's fp32 logits on validation's cases
    greedy_match: bool | None = None  # 32-token greedy continuation identical to PyTorch's
    greedy_flip: dict | None = None  # where that continuation first left PyTorch's (fp32: at a near-tie only)
    ppl: float | None = None  # perplexity on the manifest's ppl_protocol (with --kv's cache where it applies)
    ppl_delta: float | None = None  # ppl / the fp32 graph's ppl - 1 (a fraction: 0.01 is +1%)
    greedy_agreement: float | None = None  # fraction of next tokens equal to the fp32 graph's, teacher-forced
    kld_mean: float | None = None  # KL(fp32 graph || this file) of next-token distributions, nats, mean over them
    kld_p99: float | None = None  # its 99th percentile, nats (same 8 x 128 teacher-forced positions)
    kv_layout: str | None = None  # "growing", or onnx_io.SHARED_BUFFER (a fixed buffer GenAI shares)
    kv_cache: dict | None = None  # the cache's precision, and --kv's check of it (kv_cache.apply)
    graph_kv_shapes: list[list[int]] | None = None  # per block (heads, head size) as the graph's cache holds it
    max_length: int | None = None  # positions the cache buffer holds (None, left out: a growing cache)
    vocab_size: int | None = None  # width of the graph's logits
    size_bytes: int | None = None  # bytes of the graph and its external data
    sha256: str | None = None  # hex digest of the graph's bytes
    external_data: ExternalData | None = None  # weights past 2 GB, beside the graph
    gate_misses: list[str] | None = None  # the quality gates it misses (written only with --allow-gate-miss)
    extra: dict[str, Any] = field(default_factory=dict)  # the file's own settings (block_size, calibration, ...)

    @classmethod
    def from_dict(cls, record: dict) -> Variant:
        variant = super().from_dict(record)
        if isinstance(variant.external_data, dict):
            variant.external_data = ExternalData.from_dict(variant.external_data)
        return variant


@dataclass
class PplProtocol(Record):
    """The text every file of the export is scored on."""

    data: str  # its name ("wikitext-2 test", or the file given)
    tokens: int  # tokens scored
    context: int  # window length, tokens
    stride: int  # step between windows, tokens (context // 2)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest(Record):
    """An export folder's record: its source, the protocol its files were scored on, and its variants.
    Every field but ``variants`` may be absent from a manifest an older clidep wrote (None here)."""

    variants: list[Variant]  # fp32 first
    source: str | None = None  # the model path or hub id exported
    model_type: str | None = None  # its config's model_type ("gpt2", "cli-gpt2")
    layer_widths: list[int] | None = None  # per block hidden width (the bottleneck's where CLI narrowed it)
    kv_shapes: list[list[int]] | None = None  # per block (heads, head size) of the model itself (unpadded)
    opset: int | None = None  # ONNX opset of the graphs
    optimize: dict | None = None  # whether graph optimisation was applied, its fusions and why
    ppl_protocol: PplProtocol | None = None
    gates: dict | None = None  # the quality gates ({"ppl_delta": {precision: max}, ...}) and whether enforced
    measured_on: dict | None = None  # the machine (runtime.machine.where)
    kv_cache: dict | None = None  # export --kv's cache format and calibration
    genai: dict[str, str] | None = None  # {precision: GenAI folder relative to the export}
    aarch64: dict | None = None  # export --check-arm's record (export/arm.py)
    gguf: dict | None = None  # export --gguf's record (export/gguf_check.py)
    executorch: dict | None = None  # export --executorch's record (export/executorch.py)
    files: dict[str, dict] | None = None  # {path: {size_bytes, sha256}} of every other file of the export
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: dict) -> Manifest:
        manifest = super().from_dict(record)
        manifest.variants = [Variant.from_dict(v) for v in manifest.variants]
        if isinstance(manifest.ppl_protocol, dict):
            manifest.ppl_protocol = PplProtocol.from_dict(manifest.ppl_protocol)
        return manifest

    def to_dict(self) -> dict:
        return {**super().to_dict(), "variants": [v.to_dict() for v in self.variants]}
