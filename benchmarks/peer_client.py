"""Run inside the optimum environment (.venv-peer): greedy-generate with optimum's ORTModelForCausalLM.

Usage: .venv-peer/bin/python benchmarks/peer_client.py ARTIFACT_DIR TOKEN_ID [TOKEN_ID ...] --new N
Prints the generated ids (prompt included) as JSON. clidep's tests call it to show that a
clidep export of a plain GPT-2 opens in the ecosystem's own client.
"""

import argparse
import json

import torch
from optimum.onnxruntime import ORTModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("ids", type=int, nargs="+")
    ap.add_argument("--new", type=int, default=24)
    ap.add_argument("--file", default="model.onnx")
    a = ap.parse_args()
    model = ORTModelForCausalLM.from_pretrained(a.artifact, file_name=a.file)
    ids = torch.tensor([a.ids])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=a.new,
        min_new_tokens=a.new,
        do_sample=False,
        pad_token_id=0,
    )
    print(json.dumps(out[0].tolist()))


if __name__ == "__main__":
    main()
