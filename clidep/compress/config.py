"""CompressConfig: every setting of ``clidep compress``, declared once (flag, default, range, help)."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.options import MAX_SEED, Options, option

METHODS = ("cli", "uniform", "auto", "layercollapse", "cli+layercollapse", "slim", "depth", "depth+slim", "grid")
#: The methods whose students are stock GPT-2s (compress/stock.py), and how depth picks its blocks.
STOCK_METHODS = ("slim", "depth", "depth+slim", "grid")
DEPTH_SCORERS = ("bi", "ntk", "every-other")
#: The block-importance scorers of compress/importance.py.
IMPORTANCE_METHODS = ("ntk", "grad", "bi", "ablation")
COLLAPSE_METHODS = ("layercollapse", "cli+layercollapse")

# The headings compress's options are listed under (--help, docs/commands/compress.md), as a user meets them:
# which student, how big (one of four, or a device budget), the chosen method's own settings, the texts, and
# the distillation.
STUDENT, SIZE, BUDGET = "Student", "Size (give one)", "Size from a device budget (instead)"
METHOD, DATA, TRAIN = "Settings of one method", "Texts", "Distillation"


@dataclass(frozen=True)
class CompressConfig(Options):
    """How to build and distil a student. run.json records it; ``--resume`` compares a new call with it."""

    # grid by default, judged by the files users ship (benchmarks/results/shipped_student.md; ratio 2.47 of the
    # reference teacher, 3 seeds): fp32 ppl 200.83 ± 0.24, below slim's 201.46 ± 0.48 in every seed (slim was
    # the best of the paper ablation: uniform 204.58, auto 204.14, CLI 213.20); its int4 file (+1.51% against
    # slim's +1.36%) and Q4_0 file (+0.74% against +0.23%) keep their gates at 3.4 and 3.7 MB against slim's 5.3
    # and 8.2 (every matrix splits into the quantisers' blocks: slim's Q4_0 keeps 37 of 49 in F16); and at
    # GPT-2-medium shapes its heads of 64 decode int4 1.1-1.25x faster (int4_table.md). The files export writes
    # from it (QKV at 8 bits), on that protocol: int4 1.031-1.036x the teacher's fp32 at ratio 2.47 and
    # 1.083-1.088x at ratio 4, +0.39 to +1.26% from its own fp32; Q4_0 0.38-0.43x its F16 file (shipped_ppl.md).
    # In the deployed ablation (paper_ablation.md, _4x.md) at ratio 4 slim's int4 file is ~1% better than
    # grid's (seed 0: 209.47 against 211.49-212.62) for 8% more MB, but llama.cpp quantises none of its
    # matrices (116 splits into no 32-weight block: export refuses its Q4_0 file); grid stays the default.
    method: str = option(
        "grid",
        "grid (the default: width in whole heads of the teacher's size, MLP width and depth each on the grid quantisers take whole, ranked by a short distillation; a stock GPT-2), slim (one narrower residual width, embeddings included; stock), depth (fewer blocks; stock), depth+slim (stock), uniform (every block through one bottleneck), cli (protect critical blocks), auto (widths follow importance scores), layercollapse or cli+layercollapse.",
        choices=METHODS,
        group=STUDENT,
    )
    init: str = option(
        "teacher",
        "teacher (PCA of the teacher's stream, kept heads/neurons) or random.",
        choices=("teacher", "random"),
        group=STUDENT,
    )
    precision: str = option(
        "int8",
        "The file you will ship (export --int8, --int4, or fp32): grid, depth+slim and auto rank their trials by "
        "its validation perplexity (the student's weights as that file stores them), and --max-decode-ms and "
        "--max-mb size the student for it.",
        choices=("fp32", "int8", "int4"),
        group=STUDENT,
    )
    ratio: float | None = option(None, "Target teacher / student parameter ratio.", above=1, group=SIZE)
    params: int | None = option(None, "Target student parameters.", low=1, group=SIZE)
    width: int | None = option(
        None, "Explicit bottleneck width (--method slim: the one residual width).", low=1, group=SIZE
    )
    match: str | None = option(None, "A clidep student whose size to match within 2%.", group=SIZE)
    max_decode_ms: float | None = option(
        None,
        "Size the student to decode within this many ms/token on --device at --precision (bandwidth model, printed).",
        above=0,
        group=BUDGET,
    )
    max_mb: float | None = option(
        None, "Size the student so its weights at --precision fit in this many MB.", above=0, group=BUDGET
    )
    device: str | None = option(
        None,
        "Device profile for --max-decode-ms: a name from `clidep devices` (host: measured now) or a .toml file.",
        group=BUDGET,
    )
    protect: str = option(
        "auto",
        "auto (NTK analysis), an importance.json from clidep analyze, or blocks like 0,11.",
        group=METHOD,
        methods=("cli", "layercollapse", "cli+layercollapse"),
    )
    scorer: tuple[str, ...] = option(
        ("ntk", "bi"),
        "importance scores the widths follow (ntk, grad, bi, ablation); several are candidates.",
        choices=IMPORTANCE_METHODS,
        items=str,
        group=METHOD,
        methods=("auto",),
    )
    gamma: tuple[float, ...] = option(
        (0.0, 0.25, 0.5, 1.0),
        "exponents, width_i proportional to score_i^gamma (0: uniform); several are candidates.",
        low=0,
        high=16,
        items=float,
        group=METHOD,
        methods=("auto",),
    )
    search_steps: int = option(
        16,
        "distillation steps each candidate gets before its validation perplexity (of the --precision file) picks one.",
        low=1,
        group=METHOD,
        methods=("auto", "depth+slim", "grid"),
    )
    head_size: int | None = option(
        None,
        "the head size its widths are whole heads of (default: the teacher's, 64 in GPT-2): a divisor of it and a multiple of 8; 32, the other size ONNX Runtime's attention kernels and llama.cpp's blocks take whole, also allows the widths between the teacher's head steps, its heads cut from the teacher's as slim's are.",
        low=8,
        group=METHOD,
        methods=("grid",),
    )
    depth_scorer: str = option(
        "bi",
        "which blocks are kept: bi (highest block influence, ShortGPT), ntk (highest NTK trace) or every-other (evenly spaced, as distilGPT2).",
        choices=DEPTH_SCORERS,
        group=METHOD,
        methods=("depth", "depth+slim", "grid"),
    )
    layers: str = option(
        "auto",
        "blocks whose MLPs train towards linear (auto: least important by NTK first; the less important half, or for --method layercollapse with a size, as many as reach it).",
        group=METHOD,
        methods=COLLAPSE_METHODS,
    )
    lc: float = option(
        1.0, "weight of the regulariser lc * (1 - alpha)^2.", above=0, group=METHOD, methods=COLLAPSE_METHODS
    )
    collapse_tol: float = option(
        0.05,
        "collapse an MLP when |1 - alpha| is at most this.",
        above=0,
        high=1,
        group=METHOD,
        methods=COLLAPSE_METHODS,
    )
    data: str | None = option(
        None, "Training text: a file, a directory of .txt, or wikitext-103 (default: offline wiki-en).", group=DATA
    )
    val_data: str = option("wiki-en-valid", "Validation text for the perplexity curve.", group=DATA)
    tokens: int | None = option(None, "Distillation tokens.", low=1, group=TRAIN)
    steps: int | None = option(None, "Distillation steps (instead of --tokens).", low=1, group=TRAIN)
    batch_size: int = option(16, "Sequences per step (global, over all processes).", low=1, group=TRAIN)
    seq_len: int = option(256, "Tokens per sequence.", low=2, group=TRAIN)
    lr: float = option(1e-3, "Peak learning rate (AdamW, warm-up then cosine to 10%).", above=0, group=TRAIN)
    warmup: int = option(20, "Linear warm-up steps of the learning rate.", low=0, group=TRAIN)
    weight_decay: float = option(
        0.01, "AdamW weight decay of the matrices (biases, norms and slopes get none).", low=0, group=TRAIN
    )
    grad_clip: float = option(1.0, "Gradient norm clip.", above=0, group=TRAIN)
    alpha: float = option(0.9, "Weight of the KL term; 1 - alpha weighs the cross-entropy.", low=0, high=1, group=TRAIN)
    temperature: float = option(1.0, "Distillation temperature.", above=0, group=TRAIN)
    seed: int = option(0, "Seed for data order, init and training.", low=0, high=MAX_SEED, group=TRAIN)
    eval_every: int = option(50, "Steps between validation perplexities (0: none).", low=0, group=TRAIN)
    save_every: int = option(50, "Steps between checkpoints (0: none).", low=0, group=TRAIN)

    def check_new_run(self) -> None:
        """What a new run needs beyond each field's range (a resumed run takes these from run.json)."""
        budget = self.max_decode_ms is not None or self.max_mb is not None
        sizes = sum(x is not None for x in (self.ratio, self.params, self.width, self.match)) + budget
        if self.device is not None and self.max_decode_ms is None:
            raise ClidepError("--device sizes a student with --max-decode-ms: give both")
        if self.method == "layercollapse":
            if self.width is not None or sizes > 1:
                raise ClidepError(
                    "--method layercollapse keeps every width: size it with one of --ratio, --params, --match or a budget, or with --layers"
                )
            if sizes and self.layers != "auto":
                raise ClidepError(
                    "--layers LIST fixes the size of a layercollapse student: leave --layers auto to size it by --ratio/--params/--match"
                )
        elif sizes != 1:
            raise ClidepError(
                "give exactly one of --ratio, --params, --width, --match or a budget (--max-decode-ms and/or --max-mb)"
            )
        elif self.method in ("auto", "depth", "depth+slim", "grid") and self.width is not None:
            raise ClidepError(
                f"--method {self.method} chooses its widths: size it with --ratio, --params or --match "
                "(--width sizes --method slim, uniform or cli)"
            )
        self.refuse_other_methods(self.method)
        if (self.tokens is None) == (self.steps is None):
            raise ClidepError("give exactly one of --tokens or --steps")
        steps = self.steps if self.steps is not None else -(-self.tokens // (self.batch_size * self.seq_len))
        if self.given("warmup") and self.warmup > steps:
            raise ClidepError(
                f"--warmup {self.warmup} exceeds the run's {steps} steps: the learning rate would never "
                f"reach its peak; give at most {steps}"
            )


@dataclass(frozen=True)
class AnalyzeConfig(Options):
    """How ``clidep analyze`` scores the blocks."""

    data: str = option(
        "wiki-en-valid", "Calibration text: wiki-en-valid (offline), wikitext-test, a hub name or a file."
    )
    samples: int = option(8, "Calibration sequences.", low=1)
    seq_len: int = option(128, "Tokens per calibration sequence (up to the model's positions).", low=2)
    probes: int = option(
        16, "Hutchinson probes for the NTK trace (one backward pass each; two at least, for its standard error).", low=2
    )
    method: str = option("all", "ntk, grad, bi, ablation or all.", choices=(*IMPORTANCE_METHODS, "all"))
    seed: int = option(0, "Seed for the calibration offsets and the probes.", low=0, high=MAX_SEED)
    min_gap: float = option(2.0, "Score ratio that separates critical blocks from the rest.", above=1)
