"""clidep.export.validate: typed errors for each way an export can disagree with its model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from clidep import CLIGPT2LMHeadModel
from clidep.errors import NamesMismatch, ValueMismatch
from clidep.export.traced_quantize import int8_dynamic
from clidep.export.validate import greedy_agreement, torch_reference, validate_export

from .conftest import SCHEDULES, tiny_config


def test_validation_raises_typed_errors(ragged, tmp_path):
    model, path = ragged
    other = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()  # same shapes, other weights
    with pytest.raises(ValueMismatch, match="max \\|logit diff\\|"):
        validate_export(other, path)
    graph = onnx.load(str(path))
    graph.graph.output[0].name = "scores"
    for node in graph.graph.node:
        node.output[:] = ["scores" if o == "logits" else o for o in node.output]
    onnx.save(graph, str(tmp_path / "renamed.onnx"))
    with pytest.raises(NamesMismatch):
        validate_export(model, tmp_path / "renamed.onnx")


@pytest.mark.parametrize("margin", [0.0, 5.0], ids=["near-tie", "clear"])
def test_an_fp32_graphs_greedy_continuation_may_leave_pytorchs_at_a_near_tie_only(ragged, margin):
    """PyTorch's continuation is told to end in another token than the graph picks: at a tie (margin 0, within
    twice the graph's logit difference) the swap is recorded and the graph passes, as the GGUF check allows;
    at a margin of 5, which no rounding swaps, validation fails naming the token and the margin."""
    model, path = ragged
    ref = torch_reference(model)
    assert ref.greedy_logits.shape == (ref.greedy.shape[1] - ref.prompt.shape[1], model.config.vocab_size)
    assert validate_export(ref, path) == {"max_abs_logit_diff": pytest.approx(0, abs=1e-4), "greedy_match": True}
    picked = int(ref.greedy[0, -1])
    ref.greedy[0, -1] = other = (picked + 1) % model.config.vocab_size
    ref.greedy_logits[-1, other] = ref.greedy_logits[-1, picked] + margin
    if margin:
        with pytest.raises(
            ValueMismatch, match=r"at its token 31, where PyTorch's margin is 5 \(a near-tie is at most"
        ):
            validate_export(ref, path)
        return
    flip = validate_export(ref, path)["greedy_flip"]
    assert (flip["token"], flip["pytorch"], flip["onnxruntime"], flip["pytorch_margin"]) == (31, other, picked, 0.0)


def test_greedy_agreement_is_one_for_a_graph_against_itself_and_lower_for_a_stranger(ragged, tmp_path):
    model, path = ragged
    windows = np.random.default_rng(0).integers(1, model.config.vocab_size, (2, 32))
    assert greedy_agreement(path, path, windows) == 1.0
    quantised = int8_dynamic(path, tmp_path / "q.onnx")
    assert 0.5 < greedy_agreement(path, quantised, windows) <= 1.0
    other = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    from clidep.export.traced_graph import export_onnx

    stranger = export_onnx(other, tmp_path / "other.onnx")
    assert greedy_agreement(path, stranger, windows) < 0.2  # two random models agree about 1 time in 101
