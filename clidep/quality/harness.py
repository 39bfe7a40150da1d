"""An lm-evaluation-harness model backend for clidep's exports, registered as ``--model clidep``.

The harness asks a model three things (``lm_eval.api.model.LM``): the log-likelihood of a continuation after a
context (``loglikelihood``: LAMBADA, HellaSwag, PIQA, ARC, WinoGrande), of a whole text in windows
(``loglikelihood_rolling``: WikiText) and a greedy continuation (``generate_until``). The harness's own base,
``TemplateLM``, turns the first into token requests by its own rules (the context/continuation split at the join,
an empty context given the end-of-text token, no BOS added), as its ``hf`` backend does; this class supplies the
rest through the file a user ships, opened in its own runtime (runtime/opened.py): scores of token sequences,
batched, through clidep's torch-free ONNX runner, llama.cpp's bindings for a GGUF file, or ExecuTorch's runtime
for a program (.pte).

    clidep eval EXPORT --tasks clidep_lastword                      # clidep's offline task (quality/tasks.py)
    clidep-lm-eval --model clidep --model_args path=EXPORT,precision=int4 --tasks lambada_openai

``clidep-lm-eval`` is the harness's own command line with this backend registered (the harness finds models by
name in its registry only, so a plain ``lm_eval --model clidep`` cannot see it).
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from pathlib import Path

import numpy as np
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from clidep.data import load_tokenizer, tokenizer_folder
from clidep.errors import ClidepError
from clidep.perplexity import logsumexp, ppl_batch
from clidep.runtime.verify import load_manifest

#: gen_kwargs a task may give generate_until; decoding is greedy, so sampling settings are refused, not ignored.
GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature"}


@register_model("clidep")
class ClidepLM(TemplateLM):
    """A clidep export (or one file of it) as the harness's model."""

    def __init__(
        self,
        path: str,
        precision: str | None = None,
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        max_gen_toks: int = 256,
        device: str | None = None,
    ) -> None:
        """PATH: an export folder, or an .onnx, .gguf or .pte file of one; PRECISION picks the export's file: an
        ONNX variant (fp32, fp16, int8, int4: its precision or the start of it), with a GGUF type (f32, f16, q8_0,
        q4_0, q4_k_m, ...) llama.cpp's file, with an ExecuTorch scheme (8da4w, 8da8w) its program. BATCH_SIZE:
        sequences scored at once ("auto": as many as fit a quarter of free memory, at most MAX_BATCH_SIZE).
        DEVICE: the CPU whatever it says (a note says so: the harness's command line passes cuda:0 by default)."""
        super().__init__()
        if device not in (None, "cpu"):  # the harness's own command line passes cuda:0 unless told otherwise
            print(
                f"note: clidep's backend runs on the CPU (ONNX Runtime's, llama.cpp's or ExecuTorch's), not {device}",
                file=sys.stderr,
            )
        self._stack = contextlib.ExitStack()
        weakref.finalize(self, self._stack.close)  # the export's lock let go at the latest when Python exits
        from clidep.runtime.opened import opened

        self.file = _pick_file(Path(path), precision)
        self._model = self._stack.enter_context(opened(self.file))  # held open until close()
        self.runtime, self.max_length, vocab = self._model.runtime, self._model.positions, self._model.vocab
        self.tokenizer = load_tokenizer(tokenizer_folder(self.file), vocab)
        self._eot = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        bos = self.tokenizer.bos_token_id
        self._prefix = self._eot if bos is None else bos  # as the hf backend: BOS, else end-of-text
        self.batch_size = _batch(batch_size, max_batch_size, self.max_length, vocab)
        self._max_gen_toks = max_gen_toks

    def close(self) -> None:
        self._stack.close()

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """(sum of log-probabilities, all greedy) of each request's continuation tokens after its context,
        as the hf backend scores them: the last MAX_LENGTH + 1 tokens, the final one never fed. Longest first,
        BATCH_SIZE sequences a forward pass, padded on the right (causal: padding never reaches a scored row)."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        step = override_bs or self.batch_size
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            seqs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1) :] for i in chunk]
            logits = self._logits([s[:-1] for s in seqs])
            for row, i, seq in zip(logits, chunk, seqs):
                key, _, cont = requests[i]
                n = min(len(cont), len(seq) - 1)  # continuation tokens left after truncation
                results[i] = _continuation_score(row[len(seq) - 1 - n : len(seq) - 1], np.asarray(seq[-n:]))
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, results[i])
        return results

    def _logits(self, seqs: list[list[int]]) -> np.ndarray:
        """Float32 logits of SEQS: (B, T, V) padded on the right to the longest (T) from ONNX Runtime, a list of
        (len(seq), V) from llama.cpp and ExecuTorch."""
        if self.runtime != "onnx":  # one row at a time from an empty cache: ragged rows need no padding
            return [self._model.logits(np.asarray([s]))[0] for s in seqs]
        ids = np.full((len(seqs), max(len(s) for s in seqs)), self._eot, dtype=np.int64)
        for row, s in zip(ids, seqs):
            row[: len(s)] = s
        return self._model.logits(ids)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text in disjoint windows of MAX_LENGTH tokens, each after one token of
        context (the end-of-text token first), as the harness's hf backend windows it."""
        out = []
        for (text,) in (r.args for r in requests):
            windows = utils.get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            pairs = [(None, *utils.make_disjoint_window(w)) for w in windows]
            total = sum(ll for ll, _ in self._loglikelihood_tokens(pairs, disable_tqdm=True))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first of the request's stop strings (and at end-of-text)."""
        out = []
        for context, gen_kwargs in (r.args for r in requests):
            unknown = set(gen_kwargs) - GREEDY_KWARGS
            if unknown or gen_kwargs.get("do_sample") or gen_kwargs.get("temperature", 0) > 0:
                raise ClidepError(f"clidep's backend decodes greedily; the task asks for {dict(gen_kwargs)}")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until
            budget = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            prompt = self.tok_encode(context)[-(self.max_length - budget) :]
            text = self.tok_decode(self._generate(prompt, budget))
            for stop in until:
                text = text.split(stop)[0] if stop else text
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def _generate(self, prompt: list[int], budget: int) -> list[int]:
        ids = np.asarray([prompt], dtype=np.int64)
        new = self._model.greedy(ids, budget, self._eot)[0, len(prompt) :].tolist()
        return new[: new.index(self._eot)] if self._eot in new else new


def _continuation_score(logits: np.ndarray, targets: np.ndarray) -> tuple[float, bool]:
    """(sum of log p(target), every target the argmax): LOGITS (N, V), row i predicting TARGETS[i]."""
    rows = logits.astype(np.float64)
    logp = rows[np.arange(len(targets)), targets] - logsumexp(rows)[:, 0]
    return float(logp.sum()), bool((rows.argmax(-1) == targets).all())


def _pick_file(path: Path, precision: str | None) -> Path:
    """The file that PATH and PRECISION name (its runtime follows from its type); one clear error for anything
    else."""
    from clidep.runtime.opened import RUNTIME_OF

    if path.suffix in RUNTIME_OF:
        if not path.is_file():
            raise ClidepError(f"no file at '{path}'")
        if precision is not None:
            raise ClidepError(f"precision={precision} picks a file in an export folder; '{path}' is a file already")
        return path
    manifest = load_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise ClidepError(f"'{path}' is not a folder written by clidep export (no manifest.json)")
    others = {  # llama.cpp's GGUF types and ExecuTorch's schemes (its fp32 program by path: fp32 is the graph's)
        **{f["type"]: path / "gguf" / f["file"] for f in (manifest.gguf or {}).get("files", [])},
        **{
            f["quant"]: path / "executorch" / f["file"]
            for f in (manifest.executorch or {}).get("files", [])
            if f["quant"] != "fp32"
        },
    }
    if precision in others:
        return others[precision]
    wanted = precision or "fp32"
    found = [v.file for v in manifest.variants if v.precision == wanted] or [
        v.file for v in manifest.variants if v.precision.startswith(wanted + "-")
    ]
    if len(found) != 1:
        have = [v.precision for v in manifest.variants] + list(others)
        raise ClidepError(f"precision={wanted} names {len(found)} of the export's files; it has {', '.join(have)}")
    return path / found[0]


def _batch(asked: int | str, most: int | None, positions: int, vocab: int) -> int:
    """BATCH_SIZE as a number: "auto" is as many windows as a quarter of free memory holds, at most MOST."""
    if str(asked) == "auto":
        import psutil

        return ppl_batch(positions, vocab, most=most or 64, budget=psutil.virtual_memory().available // 4)
    try:
        size = int(asked)
    except ValueError:
        raise ClidepError(f"batch_size={asked}: give a whole number or auto") from None
    if size < 1:
        raise ClidepError(f"batch_size={asked}: give at least 1")
    return size


def run_tasks(
    path: str | Path,
    tasks: list[str],
    limit: int | None = None,
    batch_size: int | str = 8,
    precision: str | None = None,
) -> dict:
    """The harness's results for TASKS (its own task names, clidep's local tasks, or YAML files or folders of
    them) over the export at PATH through this backend: {task: {metric: value}}. LIMIT: the first N documents
    of each task (quick checks; figures then say so in "sample_len")."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from clidep.quality.local_tasks import local_task_names, task_folder

    names, include = _task_names(tasks)
    if set(names) & set(local_task_names()):
        include.append(str(task_folder()))
    manager = TaskManager(include_path=include or None)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise ClidepError(
            f"no task {', '.join(unknown)} (the harness's tasks, {', '.join(local_task_names())}, or a task YAML)"
        )
    lm = ClidepLM(str(path), precision=precision, batch_size=batch_size)
    try:
        found = simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, bootstrap_iters=0)
    finally:
        lm.close()
    return {
        task: {k.split(",")[0]: v for k, v in metrics.items() if k not in ("name", "alias")}
        for task, metrics in found["results"].items()
    }


def _task_names(tasks: list[str]) -> tuple[list[str], list[str]]:
    """(task names, YAML folders to include) from --tasks: a YAML file adds its folder and its task: name (read
    as text: harness YAML may hold !function tags no plain YAML loader takes)."""
    import re

    names, include = [], []
    for task in tasks:
        path = Path(task).expanduser()
        if path.suffix in (".yaml", ".yml") and path.is_file():
            found = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", path.read_text(errors="replace"), re.M)
            if not found:
                raise ClidepError(f"'{path}' names no task (a harness task YAML has a task: line)")
            names.append(found.group(1))
            include.append(str(path.parent))
        else:
            names.append(task)
    return names, include


def main() -> None:
    """``clidep-lm-eval``: the harness's command line (the same arguments as ``lm_eval``) with --model clidep."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
