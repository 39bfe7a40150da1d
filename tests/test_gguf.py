"""export --gguf and bench --runtime llamacpp: GGUF files written by clidep and checked in llama.cpp itself.

llama.cpp is built by scripts/setup.sh (through scripts/llamacpp.sh): these tests need it and fail, saying how
to build it, where it is missing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from clidep.errors import TokenizerMismatch, Unavailable, ValueMismatch
from clidep.export.gguf_check import GGUF_PPL_GATES, LOGIT_ATOL, GGUFReference, check_gguf
from clidep.model.convert import load_model
from clidep.runtime import llamacpp, verify

from .conftest import run, tiny_config


def test_teacher_gguf_files_pass_llama_cpp_and_agree_with_the_onnx_export(teacher_gguf):
    out, manifest = teacher_gguf
    g = manifest["gguf"]
    files = {f["type"]: f for f in g["files"]}
    assert list(files) == ["f32", "f16", "q8_0", "q4_0"] and g["llama_cpp"]["build"] not in (None, "unknown")
    for f in files.values():
        path = out / g["folder"] / f["file"]
        assert path.stat().st_size == f["size_bytes"] and verify.file_sha256(path) == f["sha256"]
    # llama.cpp's own arithmetic reproduces PyTorch's (F32), its greedy tokens (F32, F16), and the ONNX file's
    # perplexity on the same tokens and window: two runtimes, one number
    assert (
        files["f32"]["max_abs_logit_diff"] <= LOGIT_ATOL
        and files["f32"]["greedy_match"]
        and files["f16"]["greedy_match"]
    )
    fp32_onnx = manifest["variants"][0]
    assert math.isclose(files["f32"]["ppl"], fp32_onnx["ppl"], rel_tol=1e-4)
    for kind in ("f16", "q8_0", "q4_0"):  # the default --gguf-types
        assert files[kind]["ppl_delta"] <= GGUF_PPL_GATES[kind]
    assert files["q4_0"]["ppl_delta"] > files["q8_0"]["ppl_delta"], "4-bit weights cost more than 8-bit"
    sizes = [files[k]["size_bytes"] for k in ("f32", "f16", "q8_0", "q4_0")]
    assert sizes == sorted(sizes, reverse=True) and sizes[3] < 0.2 * sizes[0]
    # llama.cpp's types per tensor: norms, biases and position embeddings F32; in Q4_0 the tied table Q6_K
    assert files["q4_0"]["tensor_types"] == {"F32": 12 * 8 + 3, "Q4_0": 12 * 4, "Q6_K": 1}
    assert files["f16"]["tensor_types"] == {"F32": 12 * 8 + 3, "F16": 12 * 4 + 1}


def test_llama_cpp_reads_the_teacher_gguf_as_transformers_does(teacher_gguf, teacher_dir):
    """Its tokeniser gives transformers' ids on text (the vocabulary, merges and pre-tokeniser clidep names),
    and its logits PyTorch's within the gate."""
    from clidep.data import load_tokenizer

    out, manifest = teacher_gguf
    tok = load_tokenizer(teacher_dir)
    text = "Ends of the 19th century: 1,024 tons -- weren't they?\n\n  Zürich's café 東京 "
    model = llamacpp.LlamaCppModel(out / "gguf" / "model.f32.gguf", 64, exact_cache=True)
    try:
        ids = np.asarray(tok(text)["input_ids"])
        assert model.tokenize(text) == ids.tolist()
        with torch.no_grad():
            want = load_model(teacher_dir)(torch.from_numpy(ids[None]), use_cache=False).logits[0].numpy()
        assert np.abs(model.logits(ids[None])[0] - want).max() < 2 * LOGIT_ATOL
    finally:
        model.close()


def _slim_gpt2(tmp_path, teacher_dir, width: int = 72):
    """A stock GPT-2 of a width that does not split into 32-weight blocks (as slim students' often do), with the
    reference tokenizer."""
    from clidep.data import load_tokenizer

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=8192, n_positions=128, n_embd=width, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    ).eval()
    gpt2.save_pretrained(tmp_path / "slim")
    load_tokenizer(teacher_dir).save_pretrained(tmp_path / "slim")
    return tmp_path / "slim"


def _reference(model, n: int = 24) -> GGUFReference:
    from clidep.export.gguf_check import _ggml_gelu

    ids = np.arange(1, n + 1) * 37 % model.config.vocab_size
    with torch.no_grad():
        x = torch.from_numpy(ids[None])
        plain = model(x, use_cache=False).logits[0].numpy()
        with _ggml_gelu(model):
            table = model(x, use_cache=False).logits[0].numpy()
        greedy = model.generate(
            x[:, :8],
            attention_mask=torch.ones(1, 8, dtype=torch.long),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        ).numpy()
    return GGUFReference([(ids, table, plain)], ids[None, :8], greedy)


def test_a_width_off_the_32_block_grid_keeps_f16_rows_and_passes(tmp_path, teacher_dir):
    from clidep.data import load_tokenizer
    from clidep.export.gguf import quantize_gguf, write_gguf

    folder = _slim_gpt2(tmp_path, teacher_dir)
    model = load_model(folder)
    tok = load_tokenizer(folder)
    files = [
        {"file": "m.f32.gguf", "type": "f32", **write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "slim")},
        {
            "file": "m.q4_0.gguf",
            "type": "q4_0",
            **quantize_gguf(tmp_path / "m.f32.gguf", tmp_path / "m.q4_0.gguf", "q4_0"),
        },
    ]
    # rows of 72 do not split into blocks of 32: llama-quantize's fallback, F16, for every matrix (the tied
    # table's Q6_K and Q8_0 too) but the MLP's down projections (rows of 4 x 72 = 288 = 9 blocks)
    assert files[1]["tensor_types"] == {"F16": 2 * 3 + 1, "F32": 2 * 8 + 3, "Q4_0": 2}
    # the manifest says so per file: the fallback cannot hide behind the file's name
    assert (files[1]["matrices"], files[1]["matrices_of_type"], files[1]["float_matrices"]) == (9, 2, 7)
    assert files[0]["float_matrices"] == 0 and files[0]["matrices_of_type"] == 9
    ids = np.asarray(tok(" ".join(["the river and the city"] * 40))["input_ids"])[:129]
    check_gguf(files, tmp_path, _reference(model), tok, "the river and the city", ids, 64, lambda m: None)
    assert files[0]["max_abs_logit_diff"] <= LOGIT_ATOL and files[0]["greedy_match"]
    assert not any("gate_misses" in f for f in files)


@pytest.mark.parametrize("margin", [1e-6, 5.0])
def test_a_greedy_continuation_may_leave_pytorchs_at_a_near_tie_only(tmp_path, teacher_dir, margin):
    """PyTorch's continuation is told to end in another token than llama.cpp's F32 file picks: where PyTorch's
    margin between the two is a near-tie (1e-6, within twice the file's logit difference) the swap is recorded
    and the file passes; where it is 5 (no rounding swaps that) the check fails, naming the token and margin."""
    from clidep.data import load_tokenizer
    from clidep.errors import ValueMismatch
    from clidep.export.gguf import write_gguf

    folder = _slim_gpt2(tmp_path, teacher_dir)
    model, tok = load_model(folder), load_tokenizer(folder)
    files = [{"file": "m.f32.gguf", "type": "f32", **write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "s")}]
    ref = _reference(model)
    llama_cpp = int(ref.greedy[0, -1])
    ref.greedy[0, -1] = other = (llama_cpp + 1) % model.config.vocab_size
    ref.greedy_logits = np.zeros((ref.greedy.shape[1] - 8, model.config.vocab_size), dtype=np.float32)
    ref.greedy_logits[-1, other] = margin
    ids = np.asarray(tok(" ".join(["the river and the city"] * 40))["input_ids"])[:129]
    check = lambda: check_gguf(files, tmp_path, ref, tok, "the river", ids, 64, lambda m: None)  # noqa: E731
    if margin > 1:
        with pytest.raises(ValueMismatch, match=r"at its token 7, where PyTorch's margin is 5 \(a near-tie is at most"):
            check()
        return
    check()
    flip = files[0]["greedy_flip"]
    assert not files[0]["greedy_match"] and files[0]["max_abs_logit_diff"] > 0
    assert (flip["token"], flip["pytorch"], flip["llama_cpp"]) == (7, other, llama_cpp)
    assert flip["pytorch_margin"] == pytest.approx(1e-6)
    assert flip["allowed_margin"] == 2 * files[0]["max_abs_logit_diff"]


def test_a_gguf_file_that_misses_its_gate_fails_the_export_unless_allowed(tmp_path, teacher_dir, monkeypatch):
    """A Q4_0 file held to a gate no file can meet: its entry names the miss, and the export's one rule for every
    file it writes refuses it in one line naming it, or, with --allow-gate-miss, keeps it and says so."""
    from clidep.data import load_tokenizer
    from clidep.errors import ClidepError
    from clidep.export.config import ExportConfig
    from clidep.export.gguf import quantize_gguf, write_gguf
    from clidep.export.record import enforce_gates, other_misses
    from clidep.runtime.manifest import Manifest

    folder = _slim_gpt2(tmp_path, teacher_dir)
    model, tok = load_model(folder), load_tokenizer(folder)
    files = [{"file": "m.f32.gguf", "type": "f32", **write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "s")}]
    files.append(
        {
            "file": "m.q4_0.gguf",
            "type": "q4_0",
            **quantize_gguf(tmp_path / "m.f32.gguf", tmp_path / "m.q4_0.gguf", "q4_0"),
        }
    )
    monkeypatch.setitem(GGUF_PPL_GATES, "q4_0", -1.0)
    ids = np.asarray(tok(" ".join(["the river and the city"] * 40))["input_ids"])[:129]
    check_gguf(files, tmp_path, _reference(model), tok, "the river and the city", ids, 64, lambda m: None)
    assert "gate_misses" not in files[0] and files[1]["gate_misses"][0].startswith("ppl ")
    misses = other_misses(Manifest(variants=[], gguf={"folder": "gguf", "files": files}))
    with pytest.raises(ClidepError, match=r"^gguf/m.q4_0.gguf misses its quality gate: ppl .*\(gate \+-100.0%\)"):
        enforce_gates(misses, ExportConfig(), lambda m: None)
    said = []
    enforce_gates(misses, ExportConfig(allow_gate_miss=True), said.append)
    assert len(said) == 1 and said[0].startswith("warning: gguf/m.q4_0.gguf misses its quality gate")


def test_the_check_fails_a_file_whose_weights_are_not_the_model(tmp_path, teacher_dir):
    from clidep.data import load_tokenizer
    from clidep.export.gguf import write_gguf

    folder = _slim_gpt2(tmp_path, teacher_dir, width=64)
    model = load_model(folder)
    ref = _reference(model)
    with torch.no_grad():  # one tensor not the model's (the final LayerNorm's gain doubled)
        model.transformer.ln_f.weight.mul_(2)
    write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "slim")
    files = [{"file": "m.f32.gguf", "type": "f32"}]
    with pytest.raises(ValueMismatch, match="differ from PyTorch's"):
        check_gguf(files, tmp_path, ref, load_tokenizer(folder), "text", np.arange(1, 66), 64, lambda m: None)


def test_the_check_fails_a_tokeniser_llama_cpp_would_split_otherwise(tmp_path, teacher_dir):
    from clidep.data import load_tokenizer
    from clidep.export.gguf import write_gguf

    folder = _slim_gpt2(tmp_path, teacher_dir, width=64)
    model = load_model(folder)
    write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "slim")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["merges"] = spec["model"]["merges"][:-2000]  # transformers' tokeniser now splits more
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerMismatch, match="differently from transformers"):
        check_gguf(
            [{"file": "m.f32.gguf", "type": "f32"}],
            tmp_path,
            _reference(model),
            load_tokenizer(folder),
            "Hippopotamus monstrosities notwithstanding, extraordinarily",
            np.arange(1, 66),
            64,
            lambda m: None,
        )


def test_gguf_of_a_model_llama_cpp_cannot_hold_is_refused_in_one_line(tmp_path, capsys):
    from clidep import CLIGPT2LMHeadModel
    from clidep.app import main

    torch.manual_seed(0)
    CLIGPT2LMHeadModel(tiny_config([64, 32, 64])).save_pretrained(tmp_path / "cli")
    capsys.readouterr()  # transformers' own progress bar, when no command has quieted it yet
    assert main(["export", str(tmp_path / "cli"), "--out", str(tmp_path / "o"), "--gguf"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "stock GPT-2" in err and "--method slim, depth, depth+slim or grid" in err and "[32, 64]" in err
    assert not (tmp_path / "o").exists()


def test_bench_puts_llama_cpp_beside_clidep_and_genai_in_one_table(teacher_gguf):
    from clidep.bench.report import markdown
    from clidep.commands.bench import bench
    from clidep.hardware import devices

    out, manifest = teacher_gguf
    report = bench(
        [str(out)],
        devices.load("host"),
        prompt_lens="16",
        depth="16,64",
        gen=64,
        reps=2,
        runtime="clidep,genai,llamacpp",
        log=lambda m: None,
    )
    rows = report["models"]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    by = {(r["runtime"], r["precision"]) for r in rows}
    assert {("clidep", "fp32"), ("genai", "fp32"), *(("llamacpp", k) for k in ("f32", "f16", "q8_0", "q4_0"))} <= by
    llama = [r for r in rows if r["runtime"] == "llamacpp"]
    for r in llama:
        assert len(r["tg_tps"]["64"]["samples"]) == 2 and len(r["decode_ms_samples"]) == 2, "llama-bench's samples kept"
        assert r["runner"]["llama_cpp"]["build"] == manifest["gguf"]["llama_cpp"]["build"] and r["kv_cache"] == "f16"
        assert set(r["decode_ms_at"]) == {"16", "64"} and r["peak_rss_mb"] > 0 and r["size_bytes"] > 0
    q4, f32 = (next(r for r in llama if r["precision"] == k) for k in ("q4_0", "f32"))
    assert q4["decode_ms_p50"] < f32["decode_ms_p50"], "a 5x smaller file decodes faster"
    assert report["provenance"]["llama_cpp"].startswith(llamacpp.VERSION)
    assert "| llamacpp |" in markdown(report) and "| genai |" in markdown(report)


def test_a_changed_gguf_file_is_refused_by_bench(teacher_gguf, tmp_path):
    import shutil

    out, _ = teacher_gguf
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with (copy / "gguf" / "model.q4_0.gguf").open("r+b") as f:
        f.seek(-16, 2)
        f.write(b"\x01" * 16)
    r = run(
        "bench",
        str(copy),
        "--device",
        "host",
        "--runtime",
        "llamacpp",
        "--reps",
        "1",
        "--gen",
        "64",
        "--out",
        str(tmp_path / "report"),
    )
    assert r.returncode == 2 and "model.q4_0.gguf' is not the file clidep export wrote" in r.stderr, r.stderr


def test_one_gguf_file_of_an_export_is_measured_as_that_file(teacher_gguf, tmp_path):
    """bench EXPORT/gguf/model.q4_0.gguf measures that file in llama.cpp, checked against the manifest (it failed
    with "not an ONNX model"); without --runtime llamacpp, or copied out of its export, it is refused in one line."""
    import shutil

    from clidep.bench.models import model_files
    from clidep.errors import ClidepError

    out, _ = teacher_gguf
    q4 = out / "gguf" / "model.q4_0.gguf"
    (row,) = model_files([str(q4)], log=lambda m: None)
    assert (row.name, row.precision, row.file, row.gguf, row.missing) == (out.name, "q4_0", q4, True, None)
    args = ["--device", "host", "--reps", "1", "--gen", "64", "--prompt-lens", "16", "--out", str(tmp_path / "r")]
    r = run("bench", str(q4), *args)
    assert r.returncode == 2 and "runs in llamacpp: add --runtime llamacpp" in r.stderr, r.stderr
    r = run("bench", str(q4), "--runtime", "llamacpp", *args)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "r" / "bench.json").read_text())["models"]
    assert [(m["precision"], m["runtime"]) for m in rows] == [("q4_0", "llamacpp")] and rows[0]["decode_ms_p50"] > 0
    changed = tmp_path / "changed"  # only the named file is checked: another changed one does not refuse it
    shutil.copytree(out, changed)
    with (changed / "gguf" / "model.f16.gguf").open("r+b") as f:
        f.seek(-16, 2)
        f.write(b"\x01" * 16)
    (row,) = model_files([str(changed / "gguf" / "model.q4_0.gguf")], log=lambda m: None)
    assert row.precision == "q4_0" and row.missing is None
    with pytest.raises(ClidepError, match="model.f16.gguf' is not the file clidep export wrote"):
        model_files([str(changed / "gguf" / "model.f16.gguf")], log=lambda m: None)
    shutil.copy(q4, tmp_path / "alone.gguf")
    r = run("bench", str(tmp_path / "alone.gguf"), "--runtime", "llamacpp", *args[:-1], str(tmp_path / "r2"))
    assert r.returncode == 2 and "not one of a clidep export's files" in r.stderr and len(r.stderr.splitlines()) == 1


def test_the_runtime_race_times_llama_cpp_files_with_either_cache(teacher_gguf, tmp_path, monkeypatch):
    """benchmarks/runtime.py's llama.cpp rows: F32/Q8_0/Q4_0 files with an f16 cache each and a q8_0 cache (flash
    attention on) for the quantised ones, timed through the one llama-bench record. The teacher's exported
    files stand in for the converter's (the two are tensor-for-tensor identical: benchmarks/gguf_peer.py)."""
    import shutil
    from argparse import Namespace
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import llama_peer
    import runtime

    out, manifest = teacher_gguf
    monkeypatch.setattr(
        llama_peer,
        "convert",
        lambda hf, dst, kind: Path(shutil.copy(out / manifest["gguf"]["folder"] / f"model.{kind}.gguf", dst)),
    )
    hf = tmp_path / "original"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"n_positions": 256}))
    a = Namespace(no_llama=False, depth="8,32", prompt_lens="16", gen=8)
    rows = runtime._llama_rows(a, hf, 1, 1000, lambda m: None)
    assert [(r["precision"], r["kv_cache"]) for r in rows] == [
        ("F32", "f16"),
        ("Q8_0", "f16"),
        ("Q8_0", "q8_0"),
        ("Q4_0", "f16"),
        ("Q4_0", "q8_0"),
    ], rows
    for r in rows:
        assert set(r["decode_ms_at"]) == {"8", "32"} and r["prefill_ms"]["16"] > 0 and r["size_bytes"] > 0
        # llama-bench's flash attention: on (1) where the V cache is quantised, else its default, auto (-1)
        assert r["llama_cpp"]["flash_attn"] == (1 if r["kv_cache"] == "q8_0" else -1), r["llama_cpp"]
        assert len(r["tg_tps"]["8"]["samples"]) == 3


def test_a_failing_tool_that_prints_nothing_is_still_named_with_its_status():
    """A corrupt llama.cpp cache gave 'llama-quantize failed:' and nothing after the colon."""
    with pytest.raises(Unavailable, match=r"^llama-quantize failed with exit status 1: it printed nothing$"):
        llamacpp.run_tool(["false"], "llama-quantize")


def test_the_llama_cpp_build_holds_no_amx_tile_instruction():
    """GGML_NATIVE on an Intel Xeon VM whose CPUID offers AMX without its tile state enabled compiled AMX kernels
    that died with SIGILL (`tileloadd`) on the first Q8_0 matmul, and with them every GGUF test. The build
    compiles AMX out; its CPU kernels must hold no tile instruction (AMD and ARM builds never held any)."""
    import subprocess

    libs = sorted(llamacpp.bin_dir().glob("libggml-cpu*.so*"))
    assert libs, "llama.cpp's CPU kernels not found"
    for lib in libs:
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True)
        assert listing.returncode == 0 and "ggml" in listing.stdout, listing.stderr
        tiles = {w for w in listing.stdout.split() if w in ("tileloadd", "ldtilecfg", "tdpbssd", "tdpbf16ps")}
        assert not tiles, f"{lib.name} holds AMX instructions {sorted(tiles)}"


def test_k_quants_hold_their_types_in_every_matrix_and_keep_the_gates(teacher_gguf, tmp_path):
    """q6_k, q5_k_m and q4_k_m (llama-quantize's own mixes) of the teacher: every weight matrix in the type's
    family (no F16 and no legacy fallback), sizes between Q8_0's and Q4_0's, perplexity in llama.cpp within
    its gate of the F32 file's on the same tokens."""
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.export.gguf import quantize_gguf
    from clidep.perplexity import perplexity

    out, manifest = teacher_gguf
    f32 = out / "gguf" / "model.f32.gguf"
    sizes = {f["type"]: f["size_bytes"] for f in manifest["gguf"]["files"]}
    ids = tokenize_text(load_tokenizer(out), read_text("wikitext-test")[0])[:513]  # one window: 512 tokens

    def ppl(path):
        model = llamacpp.LlamaCppModel(path, 512)
        try:
            return perplexity(model.logits, ids, 512, 256, 1).ppl
        finally:
            model.close()

    reference = ppl(f32)
    for kind in ("q6_k", "q5_k_m", "q4_k_m"):
        dst = tmp_path / f"model.{kind}.gguf"
        record = quantize_gguf(f32, dst, kind)
        assert record["matrices_of_type"] == record["matrices"] == 12 * 4 + 1, (kind, record)
        assert record["float_matrices"] == record["fallback_matrices"] == 0, (kind, record)
        assert sizes["q4_0"] < dst.stat().st_size < sizes["q8_0"], kind
        assert ppl(dst) / reference - 1 <= GGUF_PPL_GATES[kind], kind


def test_a_k_quant_whose_rows_do_not_split_into_256_is_refused(tmp_path, teacher_dir):
    """Rows of 72 (and 288) fall back to F16, Q5_0 and Q8_0 in every matrix: a file named q4_k_m would hold no
    Q4_K, so it is refused, naming what llama-quantize used instead and the block it needs."""
    from clidep.errors import NoMatrixOfType
    from clidep.export.gguf import quantize_gguf, write_gguf

    folder = _slim_gpt2(tmp_path, teacher_dir)
    write_gguf(load_model(folder), folder, tmp_path / "m.f32.gguf", "f32", "slim")
    with pytest.raises(NoMatrixOfType, match=r"would hold no Q4_K_M tensor: .* in F16/Q5_0/Q8_0 .*multiples of 256"):
        quantize_gguf(tmp_path / "m.f32.gguf", tmp_path / "m.q4_k_m.gguf", "q4_k_m")
    assert not (tmp_path / "m.q4_k_m.gguf").exists()


def test_a_gpt2_of_any_n_inner_exports_and_llama_cpp_reads_its_mlp_width(tmp_path, teacher_dir):
    """n_inner 320 beside n_embd 128 (not 4x): the export's graphs keep PyTorch's logits and the GGUF file
    states the MLP width (feed_forward_length; llama.cpp's own converter writes 4 x n_embd), so llama.cpp's
    F32 logits are PyTorch's within the gate."""
    from clidep.commands.export import export_artifact
    from clidep.data import load_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=8192, n_positions=256, n_embd=128, n_layer=2, n_head=2, n_inner=320)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "g")
    load_tokenizer(teacher_dir).save_pretrained(tmp_path / "g")
    manifest = export_artifact(
        tmp_path / "g", tmp_path / "o", int4=True, gguf=True, gguf_types="q4_0", ppl_tokens=512, log=lambda m: None
    ).to_dict()
    assert manifest["variants"][0]["max_abs_logit_diff"] <= 1e-4
    files = {f["type"]: f for f in manifest["gguf"]["files"]}
    assert files["f32"]["max_abs_logit_diff"] <= LOGIT_ATOL and files["f32"]["greedy_match"]
    assert files["q4_0"]["tensor_types"]["Q4_0"] == 2 * 4  # every block matrix, the 320-wide ones included
    import gguf

    fields = gguf.GGUFReader(str(tmp_path / "o" / "gguf" / "model.f32.gguf")).fields
    assert int(fields["gpt2.feed_forward_length"].parts[-1][0]) == 320


@pytest.mark.parametrize("teacher", [(768, 12, 12), (1024, 16, 24)], ids=["gpt2-small", "gpt2-medium"])
def test_grid_students_at_gpt2_shapes_quantise_every_matrix_where_slims_do_not(teacher, tmp_path, teacher_dir):
    """Every grid shape compress ranks at ratio 2.47 of GPT-2 small and medium (width, heads, MLP width: one
    block of each, the reference tokenizer's vocabulary; the splits into blocks depend on the row lengths alone)
    writes a Q4_0 file with no matrix left in F16 and an int4 ONNX file with every linear layer in 4 bits; its
    Q4_K_M file, where some row splits into 256 (one shape in two: 512 or 768 wide, or an MLP of 2,560 or 3,840),
    holds Q4_K/Q6_K there and llama-quantize's quantised fallbacks (Q5_0, Q8_0) elsewhere, never F16; where none
    does it is refused. Slim's 24 x 624 (12 heads of 52) at GPT-2 medium leaves matrices in F16: the check can
    tell them apart."""
    from clidep import CLIGPT2Config, CLIGPT2LMHeadModel
    from clidep.compress.stock import grid_trials, size, slim_width
    from clidep.compress.widths import head_size
    from clidep.data import load_tokenizer
    from clidep.errors import NoMatrixOfType
    from clidep.export.gguf import quantize_gguf, write_gguf
    from clidep.export.ort_graph import write_quantised
    from clidep.hardware.kernels import INT4_BLOCK
    from clidep.model.convert import config_from_gpt2

    width, heads, depth = teacher
    tconf = config_from_gpt2(GPT2Config(n_embd=width, n_head=heads, n_layer=depth))
    target = round(size(tconf, width, depth) / 2.47)
    shapes = [(c["width"], c["head_dim"], c["mlp_inner"]) for c in grid_trials(tconf, target)]
    slim = slim_width(tconf, target)
    folder = tmp_path / "tok"
    load_tokenizer(teacher_dir).save_pretrained(folder)

    def float_matrices(w: int, head_dim: int, inner: int) -> tuple[int, int, int | None]:
        """Matrices left in a float type by Q4_0, by the int4 ONNX file, and by Q4_K_M (None: refused)."""
        torch.manual_seed(0)
        config = CLIGPT2Config(
            vocab_size=8192, n_positions=64, n_embd=w, n_layer=1, n_head=w // head_dim, mlp_inner=inner
        )
        model = CLIGPT2LMHeadModel(config).eval()
        write_gguf(model, folder, tmp_path / "m.f32.gguf", "f32", "grid")
        q4 = quantize_gguf(tmp_path / "m.f32.gguf", tmp_path / "m.q4_0.gguf", "q4_0")
        _, done, linear = write_quantised(model, tmp_path / "m.int4.onnx", 4, INT4_BLOCK)
        try:
            k = quantize_gguf(tmp_path / "m.f32.gguf", tmp_path / "m.q4_k_m.gguf", "q4_k_m")["float_matrices"]
        except NoMatrixOfType:
            k = None
        return q4["float_matrices"], linear - done, k

    assert shapes
    k_quants = {shape: float_matrices(*shape) for shape in shapes}
    assert all(found[:2] == (0, 0) for found in k_quants.values()), k_quants
    written = {shape: found[2] for shape, found in k_quants.items() if found[2] is not None}
    assert written and set(written.values()) == {0}, k_quants
    assert set(written) == {s for s in shapes if s[0] % 256 == 0 or s[2] % 256 == 0}, k_quants
    if width == 1024:
        assert slim == 624 and float_matrices(slim, head_size(slim, 64), 4 * slim)[0] > 0
