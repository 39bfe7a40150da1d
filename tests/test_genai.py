"""clidep.export.genai: the ONNX Runtime GenAI folder of an export generates what transformers does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime_genai as og
import pytest
import torch

from clidep import CLIGPT2LMHeadModel
from clidep.commands.export import export_artifact
from clidep.compress.widths import build
from clidep.data import load_tokenizer
from clidep.export.genai import CONFIG_FILE
from clidep.model.convert import load_model


@pytest.fixture(scope="module")
def student_export(teacher_dir, tmp_path_factory):
    """A CLI student of the reference teacher (blocks of 256 and 84: per-block KV shapes), random
    weights, exported at fp32 and int4 with its GenAI folders."""
    root = tmp_path_factory.mktemp("genai")
    torch.manual_seed(0)
    config = build(load_model(teacher_dir).config, "cli", 84, [0, 11])
    CLIGPT2LMHeadModel(config).eval().save_pretrained(root / "student")
    load_tokenizer(teacher_dir).save_pretrained(root / "student")
    manifest = export_artifact(root / "student", root / "onnx", int4=True, ppl_tokens=512).to_dict()
    return root, manifest


def _genai_greedy(folder, prompt: list[int], new: int) -> list[int]:
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return list(generator.get_sequence(0))


@pytest.mark.parametrize("share", [True, False])
def test_genai_generates_the_tokens_transformers_does(share, student_export, tmp_path):
    root, manifest = student_export
    assert set(manifest["genai"]) == {"fp32", "int4-weight-only"}
    folder = tmp_path / "fp32"
    shutil.copytree(root / "onnx" / manifest["genai"]["fp32"], folder)  # what a user copies to the device
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["search"]["past_present_share_buffer"] is True, "the ONNX Runtime graph shares its buffers"
    config["search"]["past_present_share_buffer"] = share
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    prompt = [11, 250, 37, 4000, 9, 77]
    model = load_model(root / "student")
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, 6, dtype=torch.long),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            pad_token_id=0,
        )[0].tolist()
    assert _genai_greedy(folder, prompt, 20) == ref


def test_every_precision_has_a_self_contained_folder(student_export):
    root, manifest = student_export
    for precision, rel in manifest["genai"].items():
        folder = root / "onnx" / rel
        config = json.loads((folder / CONFIG_FILE).read_text())
        graph = folder / config["model"]["decoder"]["filename"]
        variant = next(v for v in manifest["variants"] if v["precision"] == precision)
        assert graph.samefile(root / "onnx" / variant["file"]), "a hard link to the variant, not a copy"
        assert (folder / "tokenizer.json").is_file() and config["model"]["context_length"] == 512
        assert variant["kv_layout"] == "shared-buffer" and variant["graph_kv_shapes"][1] == [1, 88], (
            "84-wide blocks: one head of 84, stored as 88"
        )
    assert len(_genai_greedy(root / "onnx" / manifest["genai"]["int4-weight-only"], [11, 250, 37], 5)) == 8


def test_bench_measures_genai_beside_clideps_runner(student_export):
    from clidep.bench.report import markdown
    from clidep.commands.bench import bench
    from clidep.hardware import devices

    root, _ = student_export
    report = bench(
        [str(root / "onnx")], devices.load("host"), prompt_lens="16,512", gen=64, depth="16,64", log=lambda m: None
    )  # 512: a prompt as long as the model's positions
    rows = {(r["precision"], r["runtime"]): r for r in report["models"]}
    assert set(rows) == {(p, rt) for p in ("fp32", "int4-weight-only") for rt in ("clidep", "genai")}
    for r in rows.values():
        assert "error" not in r, r.get("error")
        assert r["decode_ms_p50"] > 0 and r["ttft_ms"] > 0 and set(r["decode_ms_at"]) == {"16", "64"}
    assert rows[("fp32", "genai")]["runner"]["onnxruntime_genai"] == og.__version__
    assert "| genai |" in markdown(report)
    only = bench(
        [str(root / "onnx")], devices.load("host"), prompt_lens="16", gen=64, runtime="clidep", log=lambda m: None
    )
    assert {r["runtime"] for r in only["models"]} == {"clidep"}
