"""Training tokens: a corpus tokenised once into a memory-mapped cache, and deterministic batches.

Documents are packed end to end with EOS between them. The cache file is keyed by the
tokenizer's vocabulary and the corpus content, so a changed file or tokenizer never reuses
stale tokens. Batches are a pure function of (seed, step): a resumed run, or several processes
each taking their slice, see exactly the windows an uninterrupted single process would.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from clidep.data import read_corpus
from clidep.errors import ClidepError
from clidep.files import atomic_write, cache_dir


def token_file(tokenizer, spec: str) -> np.ndarray:
    """The corpus SPEC as one packed token array (uint16 or uint32 memmap), tokenised on first use."""
    docs = read_corpus(spec)
    h = hashlib.sha256()
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    for doc in docs:
        h.update(doc.encode())
    dtype = np.uint16 if len(tokenizer) <= 65536 else np.uint32
    path = cache_dir("tokens") / f"{h.hexdigest()[:24]}.{np.dtype(dtype).name}"
    if not path.exists():
        eos = tokenizer.eos_token_id
        ids = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
        packed = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=dtype)
        atomic_write(path, lambda tmp: packed.tofile(tmp))
    return np.memmap(path, dtype=dtype, mode="r")


def batch(tokens: np.ndarray, seed: int, step: int, size: int, seq_len: int) -> np.ndarray:
    """The global batch of step STEP: SIZE windows of SEQ_LEN tokens at offsets drawn from (seed, step)."""
    if tokens.size <= seq_len:
        raise ClidepError(
            f"the training text holds {tokens.size:,} tokens, fewer than one window of {seq_len} "
            "(the distillation windows of --seq-len, the calibration windows of up to 256); give a longer --data"
        )
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - seq_len, size=size)
    return np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])  # (SIZE, SEQ_LEN)
