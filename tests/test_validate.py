"""clidep.export.validate: typed errors for each way an export can disagree with its model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from clidep import CLIGPT2LMHeadModel
from clidep.errors import NamesMismatch, ValueMismatch
from clidep.export.traced_quantize import int8_dynamic
from clidep.export.validate import greedy_agreement, validate_export

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
