"""Train the tiny GPT-2 that ships inside clidep for `clidep demo` (clidep/demo_model/).

It learns from the Python standard library's own documentation strings (``python-docs``:
text every machine with Python has, nothing downloaded, nothing copied from elsewhere), with
a byte-level BPE of 2,048 tokens trained on the same text. 8 blocks x 96, 3 heads, 256
positions: 1.1 M parameters, 4.5 MB of safetensors.

    python benchmarks/train_demo_model.py                 # 1,000 steps of 16 x 128 tokens, ~5 minutes on 2 cores
    python benchmarks/train_demo_model.py --steps 50 --out /tmp/demo-model   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "clidep" / "demo_model"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import numpy as np
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from clidep.data import tokenize_text
    from clidep.perplexity import perplexity, torch_logits_fn
    from clidep.stdlib_docs import python_docs

    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train_docs, valid_docs = python_docs()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train_docs, vocab_size=2048, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    eos = tok.eos_token_id
    ids = np.concatenate([np.asarray(tok(d).input_ids + [eos]) for d in train_docs]).astype(np.int64)
    valid = tokenize_text(tok, "\n\n".join(valid_docs))
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=96, n_layer=8, n_head=3, bos_token_id=eos, eos_token_id=eos
    )
    model = GPT2LMHeadModel(config)
    n = sum(p.numel() for p in model.parameters())
    print(f"train tokens {ids.size:,}, valid tokens {valid.size:,}, params {n:,}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(a.seed)
    batch, ctx, t0, total = 16, 128, time.time(), a.steps
    model.train()
    for step in range(total):
        lr = 3e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, ids.size - ctx - 1, batch)
        x = torch.from_numpy(np.stack([ids[s : s + ctx] for s in starts]))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} loss {loss.item():.3f}", flush=True)
    model.eval()
    ppl = perplexity(torch_logits_fn(model), valid, 256, 128, 8).ppl
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {
        "params": n,
        "train_tokens": int(ids.size),
        "steps": total,
        "tokens_seen": total * batch * ctx,
        "minutes": round((time.time() - t0) / 60, 1),
        "valid_ppl": ppl,
        "valid": "python-docs-valid, context 256, stride 128",
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(info)


if __name__ == "__main__":
    main()
