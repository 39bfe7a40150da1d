"""A student scored as the file a user ships: its weights as the int8 or int4 ONNX file stores them.

Users run the quantised file, not the fp32 student, so the search that picks a student's shape ranks its
trials (``--precision``) and compress.json reports the finished student by the validation perplexity of
its weights read back from ONNX Runtime's own block quantiser (``hardware/blockwise.py``): every linear
layer at the layout's bits, the tied embedding/LM head table at its table bits, LayerNorms, biases and
position embeddings kept, as ``export/ort_graph.py`` writes them. What the proxy leaves out is the int8
rounding of activations that MatMulNBits' accuracy level 4 adds at run time
(benchmarks/results/shipped_proxy.md measures the gap against the written files).
"""

from __future__ import annotations

import copy

import numpy as np

#: The precisions whose files compress.json reports for every student.
REPORTED = ("int8", "int4")


def ranked_by(precision: str) -> str:
    """The trial record's key that ranks a search at PRECISION (--precision): the perplexity of that file."""
    return "val_ppl" if precision == "fp32" else f"val_ppl_{precision}"


def said(scores: dict) -> str:
    """A trial's validation perplexities (distil_briefly's SCORES) as the search logs them."""
    return ", ".join(f"{_PRECISION_OF.get(k, k)} validation ppl {v:.2f}" for k, v in scores.items())


#: A validation perplexity's record key -> the file it scores.
_PRECISION_OF = {"val_ppl": "fp32", **{ranked_by(p): p for p in REPORTED}}


def as_shipped(model, precision: str):
    """A copy of MODEL (a clidep model) with the weights PRECISION's ONNX file holds (fp32: MODEL itself)."""
    from clidep.hardware.blockwise import LAYOUTS

    return model if precision == "fp32" else read_back(model, LAYOUTS[precision])


def read_back(model, layout):
    """A copy of MODEL whose every linear layer (at LAYOUT.bits_of its name) and tied embedding/head table (at
    LAYOUT.table_bits) are quantised in LAYOUT.block blocks and read back."""
    import torch

    from clidep.hardware.blockwise import round_trip

    shipped = copy.deepcopy(model)
    head = shipped.get_output_embeddings()  # tied to the table below
    weights = [
        (m.weight, layout.bits_of(name))
        for name, m in shipped.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    ]
    with torch.no_grad():
        for weight, bits in [*weights, (shipped.get_input_embeddings().weight, layout.table_bits)]:  # (out, in)
            weight.copy_(torch.from_numpy(round_trip(weight.detach().float().cpu().numpy(), bits, layout.block)))
    return shipped


def shipped_ppl(model, val_ids: np.ndarray, precision: str) -> float:
    """The validation perplexity (compress's protocol) of MODEL's weights as PRECISION's file stores them."""
    from clidep.compress.distill import validation_ppl

    return validation_ppl(as_shipped(model, precision), val_ids)


def scores(model, val_ids: np.ndarray, precision: str) -> dict:
    """A search trial's figures: MODEL's validation perplexity in fp32 (val_ppl) and, unless PRECISION is
    fp32, with the weights of that file (val_ppl_int8 or val_ppl_int4, the key ``ranked_by`` names)."""
    from clidep.compress.distill import validation_ppl

    found = {"val_ppl": validation_ppl(model, val_ids)}
    if precision != "fp32":
        found[ranked_by(precision)] = shipped_ppl(model, val_ids, precision)
    return found
