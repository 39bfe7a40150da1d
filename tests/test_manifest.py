"""manifest.json read and written through its types: every manifest written so far loads, and comes back the
same JSON. tests/golden/manifest_8169654.json is the demo teacher's export manifest as clidep 8169654 (the
last version that wrote it as a plain dict) wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clidep.errors import ClidepError
from clidep.runtime.manifest import ExternalData, Manifest, PplProtocol, Variant
from clidep.runtime.verify import MANIFEST, load_manifest

OLD = Path(__file__).parent / "golden" / "manifest_8169654.json"


def test_a_manifest_written_before_the_types_loads_typed_and_writes_back_the_same_json():
    record = json.loads(OLD.read_text())
    manifest = Manifest.from_dict(record)
    assert manifest.to_dict() == record
    fp32, int8 = manifest.variants
    assert isinstance(manifest.ppl_protocol, PplProtocol) and manifest.ppl_protocol.stride == 128
    assert (fp32.precision, int8.precision) == ("fp32", "int8-weight-only")
    assert int8.ppl_delta == pytest.approx(int8.ppl / fp32.ppl - 1)
    assert int8.extra["block_size"] == 128 and "block_size" not in fp32.extra  # a file's own settings stay its own
    assert manifest.genai == {"fp32": "genai/fp32", "int8-weight-only": "genai/int8-weight-only"}


def test_an_older_manifest_without_checksums_gates_or_cache_still_loads_and_keeps_what_it_does_not_know(tmp_path):
    """The oldest manifests listed variants with precision and file only; a newer one may carry keys this
    version does not declare: both load, and nothing is lost on writing back."""
    record = json.loads(OLD.read_text())
    for key in ("files", "gates", "measured_on", "genai", "kv_cache"):
        del record[key]
    record["created_by"] = "clidep 9.9"  # a key a later version writes
    record["variants"] = [
        {"file": "model.onnx", "precision": "fp32", "ppl": 20.0},
        {"file": "model.int8.onnx", "precision": "int8", "ppl": 20.2, "per_channel": False},
    ]
    (tmp_path / MANIFEST).write_text(json.dumps(record))
    manifest = load_manifest(tmp_path)
    assert manifest.files is None and manifest.gates is None and manifest.extra == {"created_by": "clidep 9.9"}
    assert manifest.variants[1].sha256 is None and manifest.variants[1].extra == {"per_channel": False}
    assert manifest.to_dict() == record


def test_a_variant_leaves_out_what_it_does_not_hold_and_nests_its_external_data():
    v = Variant("model.onnx", "fp32", max_length=None, external_data=ExternalData("model.onnx.data", "ab" * 32))
    assert v.to_dict() == {
        "file": "model.onnx",
        "precision": "fp32",
        "external_data": {"file": "model.onnx.data", "sha256": "ab" * 32},
    }
    assert Variant.from_dict(v.to_dict()) == v


def test_a_manifest_without_variants_is_refused_in_one_line(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"source": "x", "variants": [{"file": "model.onnx"}]}))
    with pytest.raises(ClidepError, match="lists no variants"):
        load_manifest(tmp_path)
