"""Hostile inputs across every command: one ``error:`` line, exit 2, no traceback, nothing touched.

Each case names the command line (``{placeholders}`` are files of the shared ``world`` below),
a piece of the message the user must see, and its kind: ``loss`` (the input or an earlier
result would have been destroyed), ``wrong`` (a number would have been printed or saved from
a broken model or a meaningless setting) or ``crash`` (a traceback). Every case also checks
that no file under the world changed and that a fresh output location was not created.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from clidep.app import main

from .conftest import ClosedPipe

LONG_PROMPT = "the history of the city " * 40  # more tokens than the tiny teacher's 128 positions

CASES = [
    # -- data loss: an output location that is an input, or an existing result
    ("loss", "compress {teacher} --method slim --out {teacher} --overwrite --width 32 --steps 1", "overlaps the input"),
    (
        "loss",
        "compress {teacher} --method slim --out {teacher}/student --overwrite --width 32 --steps 1",
        "overlaps the input",
    ),
    ("loss", "compress {teacher} --method slim --out {root} --overwrite --width 32 --steps 1", "overlaps the input"),
    (
        "loss",
        "compress {teacher} --method slim --out {student} --overwrite --width 0 --steps 1",
        "--width must be at least 1",
    ),
    ("loss", "compress {teacher} --method slim --out {student} --width 32 --steps 1", "pass --resume to continue it"),
    ("loss", "compress {teacher} --method slim --out {onnx} --width 32 --steps 1", "pass --overwrite"),
    (
        "loss",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --data {teacher}/model.safetensors",
        "not UTF-8",
    ),
    ("loss", "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --data {fresh}", "no training data"),
    ("loss", "export {teacher} --out {teacher} --overwrite", "overlaps the input"),
    ("loss", "export {student} --out {onnx}", "pass --overwrite"),
    ("loss", "export {teacher} --out {onnx} --overwrite --ppl-tokens -5", "--ppl-tokens must be at least 0"),
    ("loss", "export {teacher} --out {onnx} --overwrite --ppl-data {empty}", "is empty"),
    ("loss", "bench {onnx} --device host --out {analysis}", "pass --overwrite"),
    ("loss", "bench {onnx} --device host --out {onnx} --overwrite", "overlaps the input"),
    ("loss", "analyze {teacher} --out {analysis}", "pass --overwrite"),
    ("loss", "analyze {teacher} --out {teacher} --overwrite", "overlaps the input"),
    ("loss", "analyze {teacher} --out {analysis} --overwrite --samples 0", "--samples must be at least 1"),
    # -- wrong numbers: broken checkpoints and meaningless settings
    ("wrong", "eval {missing}", "weights missing for its config.json: transformer.h.1.mlp.c_fc.weight"),
    ("wrong", "eval {unexpected}", "weights unexpected for its config.json: transformer.h.3"),
    ("wrong", "eval {reshaped}", "weights of the wrong shape"),
    ("wrong", "export {missing} --out {fresh}", "weights missing"),
    ("wrong", "export {student} --out {fresh} --gguf", "--gguf needs a stock GPT-2 (one residual width)"),
    ("wrong", "export {student} --out {fresh} --executorch", "--executorch needs a stock GPT-2 (one residual width)"),
    ("wrong", "export {teacher} --out {fresh} --et-quant 8da8w", "--et-quant applies to --executorch only"),
    (
        "wrong",
        "export {teacher} --out {fresh} --gguf --gguf-types q3_k_s",
        "unknown --gguf-types 'q3_k_s': choose f32, f16, q8_0",
    ),
    ("wrong", "export {teacher} --out {fresh} --gguf-types q8_0", "--gguf-types applies to --gguf only"),
    ("wrong", "analyze {missing} --out {fresh}", "weights missing"),
    ("wrong", "compress {missing} --out {fresh} --method cli --width 32 --protect 0,3 --steps 1", "weights missing"),
    ("wrong", "compress {teacher} --out {student} --resume --lr 0.5", "changes --lr 0.5 (the run has 0.001)"),
    ("wrong", "compress {teacher} --out {student} --resume --steps 9 --seed 3", "--steps 9 (the run has 1), --seed 3"),
    ("wrong", "compress {teacher} --method slim --out {fresh} --width 32 --steps 0", "--steps must be at least 1"),
    ("wrong", "compress {teacher} --method slim --out {fresh} --width 32 --tokens -100", "--tokens must be at least 1"),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --seq-len 0",
        "--seq-len must be at least 2",
    ),
    ("wrong", "compress {teacher} --out {fresh} --params 99999999 --steps 1", "is not below the teacher's"),
    ("wrong", "compress {teacher} --out {fresh} --ratio nan --steps 1", "--ratio must be a finite number, got nan"),
    ("wrong", "compress {teacher} --out {fresh} --ratio inf --steps 1", "--ratio must be a finite number, got inf"),
    ("wrong", "compress {teacher} --out {fresh} --ratio 0.8 --steps 1", "--ratio must be above 1, got 0.8"),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 64 --steps 1",
        "--width 64 must be below the teacher's width 64",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --batch-size 0",
        "--batch-size must be at least 1",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --lr 0",
        "--lr must be above 0, got 0.0",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --lr nan",
        "--lr must be a finite number, got nan",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --alpha 1.5",
        "--alpha must be in [0, 1]",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --temperature 0",
        "--temperature must be above 0",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --eval-every -1",
        "--eval-every must be at least 0",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --collapse-tol 0",
        "--collapse-tol must be above 0",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --collapse-tol 2",
        "--collapse-tol must be in (0, 1], got 2",
    ),
    (
        "wrong",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --grad-clip 0",
        "--grad-clip must be above 0",
    ),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --method nope", "unknown --method 'nope'"),
    ("wrong", "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --lc -1", "--lc must be"),
    ("wrong", "eval {teacher} --context 0", "--context must be at least 2"),
    ("wrong", "eval {teacher} --stride 0", "--stride must be at least 1"),
    ("wrong", "eval {teacher} --context 64 --stride 64", "--stride must be between 1 and 63"),
    ("wrong", "eval {teacher} --batch-size 0", "--batch-size must be at least 1"),
    ("wrong", "eval {teacher} --data {one_token}", "a perplexity needs at least 2"),
    ("wrong", "export {teacher} --out {fresh} --ppl-tokens -5", "--ppl-tokens must be at least 0"),
    ("wrong", "export {teacher} --out {fresh} --calib-samples 0", "--calib-samples must be at least 1"),
    ("wrong", "export {teacher} --out {fresh} --opset 99", "--opset must be in [17, 20]"),
    ("wrong", "generate {onnx} --prompt hi --temperature -1", "--temperature must be in [0, 100]"),
    ("wrong", "generate {onnx} --prompt hi --top-k -3", "--top-k must be at least 0"),
    ("wrong", "generate {onnx} --prompt hi --max-new-tokens 0", "--max-new-tokens must be at least 1"),
    ("wrong", "generate {onnx} --prompt '" + LONG_PROMPT + "'", "so it can add none"),
    ("wrong", "bench {onnx} --device {nan_profile} --out {fresh}", "must be a finite positive number (got nan)"),
    ("wrong", "bench {onnx} --device host --out {fresh} --threads 0", "--threads must be at least 1, got 0"),
    ("wrong", "bench {onnx} --device host --out {fresh} --threads 1,two", "--threads must be comma-separated integers"),
    ("wrong", "bench {onnx} --device host --out {fresh} --reps 0", "--reps must be at least 1"),
    ("wrong", "bench {onnx} --device host --out {fresh} --memory-runs 0", "--memory-runs must be at least 1"),
    ("wrong", "bench {onnx} --device host --out {fresh} --ppl-tokens -1", "--ppl-tokens must be at least 0"),
    ("wrong", "bench {onnx} --device host --out {fresh} --depth 32,x", "--depth must be comma-separated integers"),
    ("wrong", "bench {onnx} --device host --out {fresh} --depth 0", "--depth must be at least 1, got 0"),
    (
        "wrong",
        "bench {onnx} --device host --out {fresh} --runtime tflite",
        "unknown --runtime 'tflite': choose clidep, genai, llamacpp",
    ),
    (
        "wrong",
        "bench {onnx} --device host --out {fresh} --remote a@b --ssh-config /nonexistent",
        "--ssh-config '/nonexistent' is not a file",
    ),
    ("wrong", "analyze {teacher} --out {fresh} --probes 0", "--probes must be at least 2"),
    (
        "wrong",
        "compress {teacher} --out {fresh} --steps 1 --device pixel-7",
        "--device sizes a student with --max-decode-ms",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --ratio 1.1 --steps 1 --protect 0,3 --method uniform",
        "--protect applies to --method cli, layercollapse and cli+layercollapse only, not uniform",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --ratio 1.1 --steps 1 --gamma 0.5",
        "--gamma applies to --method auto only",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --steps 1 --max-decode-ms 0.001 --device raspberry-pi-4",
        "no student decodes within 0.001 ms on raspberry-pi-4 at int8",
    ),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-decode-ms 5", "--max-decode-ms needs --device"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-mb 0.01", "no student fits"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-mb 500 --ratio 2", "exactly one of --ratio"),
    (
        "wrong",
        "compress {teacher} --out {fresh} --steps 1 --max-mb 10 --precision int3",
        "unknown --precision 'int3': choose fp32, int8, int4",
    ),
    ("wrong", "demo --out {fresh} --ratio 1", "--ratio must be above 1, got 1.0"),
    ("wrong", "demo --out {fresh} --steps 0", "--steps must be at least 1, got 0"),
    ("wrong", "analyze {teacher} --out {fresh} --min-gap nan", "--min-gap must be a finite number, got nan"),
    ("wrong", "analyze {teacher} --out {fresh} --min-gap 1", "--min-gap must be above 1, got 1.0"),
    ("wrong", "analyze {teacher} --out {fresh} --seq-len 1", "--seq-len must be at least 2, got 1"),
    (
        "wrong",
        "analyze {teacher} --out {fresh} --seq-len 4096",
        "--seq-len 4096 must be between 2 and the model's 128 positions",
    ),
    # -- tracebacks before: broken files, unwritable places, parse errors
    ("crash", "eval {empty_weights}", "cannot load weights"),
    ("crash", "eval {truncated}", "cannot load weights"),
    ("crash", "export {empty_weights} --out {fresh}", "cannot load weights"),
    ("crash", "analyze {truncated} --out {fresh}", "cannot load weights"),
    (
        "crash",
        "compress {truncated} --out {fresh} --method cli --width 32 --protect 0,3 --steps 1",
        "cannot load weights",
    ),
    ("crash", "eval {bad_config}", "cannot load model"),
    ("crash", "eval {no_tokenizer}", "cannot load a tokenizer"),
    ("crash", "eval {teacher} --data {empty}", "is empty"),
    ("crash", "eval {teacher} --data {binary}", "is a binary file"),
    ("crash", "eval {teacher} --data {latin1}", "is not UTF-8 text"),
    ("crash", "analyze {teacher} --out {fresh} --data {empty}", "is empty"),
    (
        "crash",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --data {binary}",
        "is a binary file",
    ),
    ("crash", "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --val-data {empty}", "is empty"),
    (
        "crash",
        "compress {teacher} --out {fresh} --method cli --width 32 --steps 1 --protect {bad_json}",
        "not a valid importance report",
    ),
    ("crash", "compress {teacher} --out {bad_run} --resume", "not a valid compress run"),
    ("crash", "export {teacher} --out {fresh} --ppl-data {binary}", "is a binary file"),
    ("crash", "export {teacher} --out /proc/clidep-out", "cannot be written"),
    ("crash", "compress {teacher} --method slim --out {empty}/sub --width 32 --steps 1", "cannot be written"),
    ("crash", "compress {teacher} --method slim --out {empty} --width 32 --steps 1", "is a file"),
    ("crash", "analyze {teacher} --out {empty}", "is a file"),
    ("crash", "bench {onnx} --device host --out /proc/clidep-out", "cannot be written"),
    ("crash", "bench {bad_manifest} --device host --out {fresh}", "not a valid clidep export manifest"),
    ("crash", "bench {no_variants} --device host --out {fresh}", "lists no variants"),
    ("crash", "eval {teacher} --context abc", "Invalid value for '--context'"),
    ("crash", "compress {teacher} --method slim --width 32", "Missing option '--out'"),
    ("crash", "eval {teacher} --bogus", "No such option"),
    ("crash", "frobnicate", "No such command 'frobnicate'"),
    (
        "crash",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --seed " + str(2**70),
        "--seed must be in [0, 4294967295]",
    ),
    ("crash", "generate {edited_positions} --prompt hi", "says n_positions 4096, but the graph's cache holds 128"),
    ("crash", "generate {onnx} --prompt " + "a\udcc3(b", "--prompt is not valid UTF-8 text"),
    ("crash", "generate {onnx} --prompt " + "\udcff\udcfeab", "--prompt is not valid UTF-8 text"),
    (
        "crash",
        "export {teacher} --out {fresh} --int4 --block-size 4096",
        "--block-size must be one of 16, 32, 64, 128, 256",
    ),
    # -- tampered artifacts: a file changed or swapped after export, a config.json edited, a manifest broken
    ("tampered", "bench {tampered} --device host --out {fresh}", "model.onnx' is not the file clidep export wrote"),
    ("tampered", "bench {tampered}/model.onnx --device host --out {fresh}", "is not the file clidep export wrote"),
    ("tampered", "generate {tampered} --prompt hi", "is not the file clidep export wrote"),
    ("tampered", "eval {tampered}", "is not the file clidep export wrote"),
    ("tampered", "bench {swapped} --device host --out {fresh}", "is not the file clidep export wrote"),
    ("tampered", "generate {swapped} --prompt hi", "is not the file clidep export wrote"),
    (
        "tampered",
        "bench {genai_swapped} --device host --out {fresh}",
        "genai/fp32/model.onnx' is not the file clidep export wrote",
    ),
    (
        "tampered",
        "bench {edited_positions} --device host --out {fresh}",
        "says n_positions 4096, but the graph's cache holds 128",
    ),
    ("tampered", "eval {edited_positions}", "says n_positions 4096"),
    (
        "tampered",
        "bench {edited_vocab} --device host --out {fresh}",
        "says vocab_size 9000, but the graph's logits have 8192",
    ),
    ("tampered", "generate {edited_vocab} --prompt hi", "says vocab_size 9000"),
    (
        "tampered",
        "generate {edited_heads} --prompt hi",
        "describes KV shapes [(4, 16), (4, 16), (4, 16), (4, 16)], but "
        "the exported model's are [(2, 32), (2, 32), (2, 32), (2, 32)]",
    ),
    ("tampered", "generate {truncated_manifest} --prompt hi", "not a valid clidep export manifest (not JSON"),
    ("tampered", "bench {truncated_manifest} --device host --out {fresh}", "not a valid clidep export manifest"),
    ("tampered", "bench {corrupt_graph} --device host --out {fresh}", "not an ONNX model: '"),
    ("tampered", "generate {corrupt_graph} --prompt hi", "not an ONNX model: '"),
    ("tampered", "eval {corrupt_graph}", "not an ONNX model: '"),
    ("tampered", "eval {corrupt_pte}", "in ExecuTorch's runtime"),
    # -- numbers past reason: beyond what the libraries take, the machine has, or a run can finish
    (
        "bounds",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 1 --seed -1",
        "--seed must be in [0, 4294967295], got -1",
    ),
    ("bounds", "analyze {teacher} --out {fresh} --seed " + str(2**40), "--seed must be in [0, 4294967295]"),
    ("bounds", "generate {onnx} --prompt hi --seed " + str(2**64), "--seed must be in [0, 4294967295]"),
    ("bounds", "bench {onnx} --device host --out {fresh} --threads 2,2", "--threads lists 2 more than once"),
    ("bounds", "bench {onnx} --device host --out {fresh} --threads 1,2,1", "--threads lists 1 more than once"),
    ("bounds", "bench {onnx} --device host --out {fresh} --depth 32,32", "--depth lists 32 more than once"),
    ("bounds", "bench {onnx} --device host --out {fresh} --prompt-lens 8,16,8", "--prompt-lens lists 8 more than once"),
    (
        "bounds",
        "bench {onnx} --device host --out {fresh} --runtime clidep,clidep",
        "--runtime lists clidep more than once",
    ),
    (
        "bounds",
        "compress {teacher} --out {fresh} --method auto --ratio 1.5 --steps 1 --gamma 0.5,0.5",
        "--gamma lists 0.5 more than once",
    ),
    (
        "bounds",
        "compress {teacher} --out {fresh} --method auto --ratio 1.5 --steps 1 --scorer ntk,bi,ntk",
        "--scorer lists ntk more than once",
    ),
    (
        "bounds",
        "compress {teacher} --out {fresh} --method cli --width 32 --steps 1 --protect 0,3,0",
        "--protect lists 0 more than once",
    ),
    (
        "bounds",
        "bench {onnx} --device host --out {fresh} --threads 1,0,-2",
        "--threads must be at least 1, got 0",
    ),
    (
        "bounds",
        "bench {onnx} --device {fast_profile} --out {fresh}",
        "'mem_bandwidth_gbs' (1e+308) is past physical sense",
    ),
    ("bounds", "bench {onnx} --device {big_ram_profile} --out {fresh}", "'ram_gb' (1e+09) is past physical sense"),
    (
        "bounds",
        "bench {onnx} --device {fast_cpu_profile} --out {fresh}",
        "'fp32_gflops' (1e+300) is past physical sense",
    ),
    ("bounds", "export {teacher} --out {fresh} --int4 --block-size 512", "--block-size must be one of"),
    ("unclear", "export {teacher} --out {fresh} --opset 18", "--opset applies to --plain-onnx only"),
    ("unclear", "export {teacher} --out {fresh} --no-optimize", "--no-optimize applies to --plain-onnx only"),
    (
        "bounds",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 2 --warmup 1000000",
        "--warmup 1000000 exceeds the run's 2 steps",
    ),
    (
        "bounds",
        "compress {teacher} --method slim --out {fresh} --width 32 --steps 2 --warmup 3",
        "--warmup 3 exceeds the run's 2 steps",
    ),
    # -- hangs before: a run of days, or more threads than the machine has
    ("hang", "bench {onnx} --device host --out {fresh} --threads 100000", "--threads 100000 exceeds this machine's"),
    ("hang", "bench {onnx} --device host --out {fresh} --reps 1000000", "pass --yes to run it anyway"),
    ("hang", "bench {onnx} --device host --out {fresh} --memory-runs 100000", "this run is estimated at about"),
    ("hang", "bench {onnx} --device host --out {fresh} --gen 10000000", "pass --yes to run it anyway"),
    # -- unclear before: messages that did not say what to do
    ("unclear", "bench {onnx} --device host --out ''", "--out '.' names no directory of its own"),
    ("unclear", "bench {onnx} --device host --out .", "names no directory of its own"),
    ("unclear", "export {teacher} --out ..", "names no directory of its own"),
    ("unclear", "analyze {teacher} --out ''", "names no directory of its own"),
    ("unclear", "compress {teacher} --method slim --out '' --width 32 --steps 1", "names no directory of its own"),
    # -- option and input errors each command's own tests once ran in a process of their own
    ("wrong", "export {teacher} --out {fresh} --static", "--static needs calibration text"),
    (
        "bounds",
        "export {teacher} --out {fresh} --int4 --block-size 24",
        "--block-size must be one of 16, 32, 64, 128, 256",
    ),
    ("unclear", "bench {onnx} --device nokia-3310 --out {fresh}", "unknown device profile 'nokia-3310'; known:"),
    (
        "unclear",
        "bench {onnx} --device host --remote nobody@127.0.0.1 --out {fresh}",
        "cannot use remote host 'nobody@",
    ),
    ("wrong", "bench {onnx} --device host --gen 8 --out {fresh}", "--gen must be at least 64"),
    ("crash", "bench {root}/texts --device host --out {fresh}", "no manifest.json"),
    ("crash", "generate {root}/texts --prompt hi", "no ONNX model"),
    ("crash", "eval /no/such/model", "no model directory at '/no/such/model'"),
    ("unclear", "eval {teacher} --data no-such-text", "no text 'no-such-text'"),
    ("wrong", "eval {teacher} --context 4096", "exceeds the model's 128 positions"),
    ("wrong", "eval {teacher} --max-tokens 100", "--max-tokens 100 is below the context 128"),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method layercollapse --layers 1,2 --ratio 1.2 --steps 1",
        "--layers LIST fixes the size of a layercollapse student",
    ),
    ("crash", "eval {root}/texts", "cannot load model"),
    ("wrong", "compress {teacher} --out {fresh} --method cli --ratio 0.8 --steps 1", "--ratio must be above 1"),
    ("wrong", "compress {teacher} --out {fresh} --method cli --ratio 60 --steps 1", "largest reachable ratio"),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method cli --match {teacher} --steps 1",
        "is not below the teacher's",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method cli --match {teacher}/tokenizer.json --steps 1",
        "is not a clidep student or GPT-2 directory",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method cli --ratio 2 --tokens 10 --steps 2",
        "exactly one of --tokens or --steps",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method cli --ratio 2 --width 32 --steps 1",
        "exactly one of --ratio, --params, --width, --match or a budget",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method auto --width 32 --steps 1",
        "--method auto chooses its widths: size it with --ratio",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method depth --width 32 --steps 1",
        "--method depth chooses its widths: size it with --ratio",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method slim --ratio 2 --protect 0 --steps 1",
        "--protect applies to --method cli, layercollapse and cli+layercollapse only, not slim",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method slim --ratio 2 --depth-scorer ntk --steps 1",
        "--depth-scorer applies to --method depth, depth+slim and grid only",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method depth --ratio 2 --search-steps 3 --steps 1",
        "--search-steps applies to --method auto, depth+slim and grid only",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method depth --ratio 2 --lc 3 --steps 1",
        "--lc applies to --method layercollapse",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method depth --ratio 2 --depth-scorer magic --steps 1",
        "--depth-scorer",
    ),
    (
        "wrong",
        "compress {teacher} --out {fresh} --method depth --ratio 60 --steps 1",
        "use --method slim or depth+slim",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method auto --ratio 1.1 --scorer ntk,magic --steps 1",
        "unknown --scorer 'magic': choose ntk, grad, bi, ablation",
    ),
    (
        "unclear",
        "compress {teacher} --out {fresh} --method auto --ratio 1.1 --gamma 0,x --steps 1",
        "--gamma must be comma-separated numbers",
    ),
    (
        "bounds",
        "compress {teacher} --out {fresh} --method auto --ratio 1.1 --gamma -1 --steps 1",
        "--gamma must be in [0, 16], got -1",
    ),
    ("unclear", "analyze {teacher} --out {fresh} --method fisher", "unknown --method 'fisher'"),
    ("bounds", "analyze {teacher} --out {fresh} --probes 0", "--probes must be at least 2"),
    ("unclear", "analyze {teacher} --out {fresh} --probes 1", "--probes must be at least 2"),
    (
        "bounds",
        "analyze {teacher} --out {fresh} --seq-len 4096",
        "--seq-len 4096 must be between 2 and the model's 128 positions",
    ),
    ("unclear", "export {teacher} --out {fresh} --kv int8 --plain-onnx", "--kv int8 needs the ONNX Runtime graph"),
    (
        "unclear",
        "export {teacher} --out {fresh} --kv fp16 --kv-scales per-tensor",
        "--kv-scales applies to the int8 KV cache only (this export's is fp16)",
    ),
    (
        "unclear",
        "export {teacher} --out {fresh} --plain-onnx --kv-calib-windows 2",
        "--kv-calib-windows applies to the int8 KV cache only (this export's is fp32)",
    ),
    ("unclear", "export {teacher} --out {fresh} --calib-samples 4", "--calib-samples applies to --static only"),
    ("unclear", "export {teacher} --out {fresh} --kv int4", "unknown --kv 'int4': choose fp32, fp16, int8"),
    # -- every other file an export holds
    ("tampered", "eval {edited_tokenizer_config}", "tokenizer_config.json' is not the file clidep export wrote"),
    ("tampered", "generate {edited_tokenizer_config} --prompt hi", "tokenizer_config.json' is not the file"),
    ("tampered", "generate {genai_tokenizer} --prompt hi", "genai/fp32/tokenizer.json' is not the file"),
    ("tampered", "bench {genai_tokenizer} --device host --out {fresh}", "genai/fp32/tokenizer.json' is not"),
    ("tampered", "eval {export_no_tokenizer}", "tokenizer.json' is not the file clidep export wrote (it is missing)"),
    ("tampered", "generate {export_no_tokenizer} --prompt hi", "no tokenizer.json beside"),
    ("tampered", "bench {genai_no_config} --device host --out {fresh}", "genai_config.json' is not the file"),
    ("tampered", "eval {genai_no_config}", "genai/fp32/genai_config.json' is not the file clidep export wrote"),
    # -- every writer, not only bench: an --out that is a link is refused, the link and its target kept
    ("loss", "export {teacher} --out {onnx_link} --overwrite", "is a symbolic link (to '"),
    ("loss", "analyze {teacher} --out {onnx_link} --overwrite", "is a symbolic link (to '"),
    (
        "loss",
        "compress {teacher} --method slim --out {onnx_link} --overwrite --width 32 --steps 1",
        "is a symbolic link (to '",
    ),
    # -- labels that lie and gates that prove nothing
    ("wrong", "export {teacher} --out {fresh} --int4 --int4-table-bits 6", "--int4-table-bits takes 4 or 8, got 6"),
    ("unclear", "export {teacher} --out {fresh} --int4-table-bits 4", "applies to --int4 in the ONNX Runtime graph"),
    (
        "unclear",
        "export {teacher} --out {fresh} --int4-8bit-layers none",
        "applies to --int4 in the ONNX Runtime graph",
    ),
    ("wrong", "export {teacher} --out {fresh} --int4 --int4-8bit-layers qkv", "unknown --int4-8bit-layers 'qkv'"),
    ("wrong", "export {narrow} --out {fresh} --gguf --gguf-types q4_0", "would hold no Q4_0 tensor"),
    ("wrong", "export {narrow} --out {fresh} --gguf --gguf-types f16,q8_0", "would hold no Q8_0 tensor"),
    ("wrong", "export {teacher} --out {fresh} --int8 --ppl-tokens 1", "--ppl-tokens 1 scores 1 token(s)"),
    ("wrong", "export {teacher} --out {fresh} --int4 --ppl-tokens 255", "the quality gates score at least 256"),
    ("wrong", "export {teacher} --out {fresh} --fp16 --ppl-data {short}", "gives 7 token(s): the quality gates"),
    ("wrong", "export {teacher} --out {fresh} --gguf --ppl-data {short}", "the quality gates score at least 256"),
    # -- checkpoints as the hub has them: what cannot work is one line naming the cause
    ("wrong", "eval {nan_weights}", "non-finite weights (NaN or inf) in transformer.h.2.attn.c_proj.bias"),
    ("wrong", "export {nan_weights} --out {fresh}", "non-finite weights (NaN or inf)"),
    ("crash", "eval {untied}", "has an LM head of its own"),
    ("crash", "compress {untied} --out {fresh} --method slim --ratio 1.5 --steps 1", "has an LM head of its own"),
    ("wrong", "eval {untied_missing}", "holds no lm_head.weight"),
    (
        "crash",
        "compress {teacher} --out {fresh} --method slim --ratio 1.5 --steps 1 --data {one_token}",
        "holds 2 tokens, fewer than one window of",
    ),
    (
        "crash",
        "compress {teacher} --out {fresh} --method cli --width 32 --steps 1 --data {one_token}",
        "fewer than one window",
    ),
    # -- every file an export holds is the one export wrote, not only its graphs
    ("tampered", "eval {edited_config}", "config.json' is not the file clidep export wrote"),
    ("tampered", "eval {other_tokenizer}", "tokenizer.json' is not the file clidep export wrote"),
    ("tampered", "generate {other_tokenizer} --prompt hi", "tokenizer.json' is not the file clidep export wrote"),
    (
        "tampered",
        "bench {other_tokenizer} --device host --out {fresh}",
        "tokenizer.json' is not the file clidep export wrote",
    ),
    (
        "tampered",
        "bench {genai_repointed} --device host --out {fresh}",
        "genai_config.json' is not the file clidep export wrote",
    ),
]


_DIGESTS: dict[tuple, str] = {}


def _tree(root: Path) -> dict[str, str]:
    """Every file under ROOT (hidden temporaries included) with a digest of its bytes.

    A digest is reused for a file of the same path, inode, size, modification and change time: any
    write to a file moves its change time, which nothing can set back, so a reused digest is still
    the digest of the bytes there (the table compares ~60 MB of files twice per row)."""
    tree = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if key not in _DIGESTS:
                _DIGESTS[key] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            tree[str(p.relative_to(root))] = _DIGESTS[key]
    return tree


def _flip_a_byte(d: Path) -> None:
    """One byte of the graph changed, its size kept: only the digest can tell."""
    graph = bytearray((d / "model.onnx").read_bytes())
    graph[len(graph) // 2] ^= 0x01
    (d / "model.onnx").write_bytes(bytes(graph))


def _swap_graph(d: Path) -> None:
    """The graph replaced by another valid one (the same weights, one metadata entry more)."""
    import onnx

    graph = onnx.load(str(d / "model.onnx"))
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, "swapped": "yes"})
    (d / "model.onnx").unlink()  # the genai folder's copy may be a hard link: break it, as a swap does
    onnx.save(graph, str(d / "model.onnx"))


def _edit_weights(nan: str | None = None, untie: bool = False):
    """An edit of a copied checkpoint: one tensor made NaN, or an LM head of its own (untied, differing)."""

    def edit(d: Path) -> None:
        weights = load_file(d / "model.safetensors")
        if nan:
            weights[nan] = weights[nan].clone().fill_(float("nan"))
        if untie:
            weights["lm_head.weight"] = weights["transformer.wte.weight"].clone() * 0.5
            config = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
        save_file(weights, d / "model.safetensors", metadata={"format": "pt"})

    return edit


def _without_file_records(edit):
    """EDIT, on an export whose manifest predates the record of its other files (its config is then checked
    against the graph instead)."""

    def older(d: Path) -> None:
        edit(d)
        manifest = json.loads((d / "manifest.json").read_text())
        del manifest["files"]
        (d / "manifest.json").write_text(json.dumps(manifest))

    return older


def _narrow_stock(teacher: Path, dst: Path) -> Path:
    """A stock GPT-2 of width 36 with the teacher's tokenizer: no row (36, 4 x 36 = 144) splits into llama.cpp's
    32-weight blocks, so llama-quantize keeps every matrix in F16 whatever type it is asked for."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = json.loads((teacher / "config.json").read_text())
    torch.manual_seed(0)
    fields = {k: config[k] for k in ("vocab_size", "n_positions", "n_layer", "bos_token_id", "eos_token_id")}
    GPT2LMHeadModel(GPT2Config(**fields, n_embd=36, n_head=4)).save_pretrained(dst)
    for f in teacher.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special")):
            shutil.copy(f, dst / f.name)
    return dst


def _broken_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_setup):
    """A tiny teacher, a finished student with its run, an export, an analysis, and broken copies of each."""
    from clidep.commands.compress import compress
    from clidep.commands.export import export_artifact
    from clidep.compress.analyze import write_report

    root = tmp_path_factory.mktemp("world")
    teacher = Path(shutil.copytree(tiny_setup / "teacher", root / "teacher"))
    train = root / "train.txt"
    shutil.copy(tiny_setup / "train.txt", train)
    compress(
        str(teacher),
        root / "student",
        method="cli",
        width=32,
        protect="0,3",
        data=str(train),
        batch_size=8,
        seq_len=64,
        eval_every=0,
        steps=1,
        log=lambda m: None,
    )
    export_artifact(teacher, root / "onnx", ppl_tokens=256)
    write_report(
        {
            "model": str(teacher),
            "critical_layers": [0],
            "scores": [
                {"layer": i, "ntk": 1.0 + i, "ntk_per_param": None, "grad": None, "bi": None, "ablation_dppl": None}
                for i in range(4)
            ],
        },
        root / "analysis",
    )

    def drop_tensor(d):
        weights = load_file(d / "model.safetensors")
        weights.pop("transformer.h.1.mlp.c_fc.weight")
        save_file(weights, d / "model.safetensors", metadata={"format": "pt"})

    def edit_config(**changes):
        def edit(d):
            config = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**config, **changes}))

        return edit

    files = {
        "missing": _broken_copy(teacher, root / "missing", drop_tensor),
        "unexpected": _broken_copy(teacher, root / "unexpected", edit_config(n_layer=3)),
        "reshaped": _broken_copy(teacher, root / "reshaped", edit_config(vocab_size=8000)),
        "empty_weights": _broken_copy(
            teacher, root / "empty_weights", lambda d: (d / "model.safetensors").write_bytes(b"")
        ),
        "truncated": _broken_copy(
            teacher,
            root / "truncated",
            lambda d: (d / "model.safetensors").write_bytes((teacher / "model.safetensors").read_bytes()[:5000]),
        ),
        "bad_config": _broken_copy(teacher, root / "bad_config", lambda d: (d / "config.json").write_text("{not json")),
        "no_tokenizer": _broken_copy(
            teacher,
            root / "no_tokenizer",
            lambda d: [
                p.unlink() for p in d.iterdir() if p.name.startswith(("tokenizer", "vocab", "merges", "special"))
            ],
        ),
        "bad_manifest": _broken_copy(
            root / "onnx", root / "bad_manifest", lambda d: (d / "manifest.json").write_text("[1, 2")
        ),
        "no_variants": _broken_copy(
            root / "onnx", root / "no_variants", lambda d: (d / "manifest.json").write_text('{"variants": 3}')
        ),
        "bad_run": _broken_copy(root / "student", root / "bad_run", lambda d: (d / "run.json").write_text("")),
        "tampered": _broken_copy(root / "onnx", root / "tampered", _flip_a_byte),
        "swapped": _broken_copy(root / "onnx", root / "swapped", _swap_graph),
        "genai_swapped": _broken_copy(
            root / "onnx", root / "genai_swapped", lambda d: _swap_graph(d / "genai" / "fp32")
        ),
        "edited_positions": _broken_copy(
            root / "onnx", root / "edited_positions", _without_file_records(edit_config(n_positions=4096))
        ),
        "edited_vocab": _broken_copy(
            root / "onnx", root / "edited_vocab", _without_file_records(edit_config(vocab_size=9000))
        ),
        "edited_heads": _broken_copy(
            root / "onnx", root / "edited_heads", _without_file_records(edit_config(n_head=4))
        ),
        "truncated_manifest": _broken_copy(
            root / "onnx",
            root / "truncated_manifest",
            lambda d: (d / "manifest.json").write_text((d / "manifest.json").read_text()[:200]),
        ),
        "edited_config": _broken_copy(root / "onnx", root / "edited_config", edit_config(n_positions=4096)),
        "other_tokenizer": _broken_copy(
            root / "onnx",
            root / "other_tokenizer",
            lambda d: (d / "tokenizer.json").write_text(
                (d / "tokenizer.json").read_text().replace('"the"', '"teh"', 1)
            ),
        ),
        "genai_repointed": _broken_copy(
            root / "onnx",
            root / "genai_repointed",
            lambda d: (d / "genai" / "fp32" / "genai_config.json").write_text(
                (d / "genai" / "fp32" / "genai_config.json").read_text().replace('"model.onnx"', '"../../model.onnx"')
            ),
        ),
        "nan_weights": _broken_copy(
            teacher, root / "nan_weights", _edit_weights(nan="transformer.h.2.attn.c_proj.bias")
        ),
        "untied": _broken_copy(teacher, root / "untied", _edit_weights(untie=True)),
        "untied_missing": _broken_copy(teacher, root / "untied_missing", edit_config(tie_word_embeddings=False)),
        "narrow": _narrow_stock(teacher, root / "narrow"),
        "edited_tokenizer_config": _broken_copy(
            root / "onnx",
            root / "edited_tokenizer_config",
            lambda d: (d / "tokenizer_config.json").write_text(
                json.dumps({**json.loads((d / "tokenizer_config.json").read_text()), "model_max_length": 64})
            ),
        ),
        "genai_tokenizer": _broken_copy(
            root / "onnx",
            root / "genai_tokenizer",
            lambda d: (d / "genai" / "fp32" / "tokenizer.json").write_text(
                (d / "tokenizer.json").read_text().replace('"the"', '"teh"', 1)
            ),
        ),
        "export_no_tokenizer": _broken_copy(
            root / "onnx", root / "export_no_tokenizer", lambda d: (d / "tokenizer.json").unlink()
        ),
        "genai_no_config": _broken_copy(
            root / "onnx", root / "genai_no_config", lambda d: (d / "genai" / "fp32" / "genai_config.json").unlink()
        ),
    }
    texts = root / "texts"
    texts.mkdir()
    (texts / "empty.txt").write_text("  \n")
    (texts / "binary.bin").write_bytes(b"\x00\x01\x02text\x00" * 50)
    (texts / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (texts / "one.txt").write_text("the")
    (texts / "short.txt").write_text("the river and the city of the north")
    (texts / "importance.json").write_text("{")
    profile = (Path(__file__).resolve().parents[1] / "clidep" / "devices" / "raspberry-pi-5.toml").read_text()
    (texts / "nan.toml").write_text(profile.replace("mem_bandwidth_gbs = 10.0", "mem_bandwidth_gbs = nan"))
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"\x08\x07garbage, not a graph" * 10)
    shutil.copy(root / "onnx" / "config.json", corrupt / "config.json")
    shutil.copy(root / "onnx" / "tokenizer.json", corrupt / "tokenizer.json")
    files["corrupt_graph"] = corrupt / "model.onnx"
    (corrupt / "model.8da4w.pte").write_bytes(b"garbage, not an ExecuTorch program" * 10)
    files["corrupt_pte"] = corrupt / "model.8da4w.pte"
    for name, old, new in (
        ("fast", "mem_bandwidth_gbs = 10.0", "mem_bandwidth_gbs = 1e308"),
        ("big_ram", "ram_gb = 8", "ram_gb = 1e9"),
        ("fast_cpu", "fp32_gflops = ", "fp32_gflops = 1e300 # "),
    ):
        assert old in profile, old
        (texts / f"{name}.toml").write_text(profile.replace(old, new, 1))
        files[f"{name}_profile"] = texts / f"{name}.toml"
    (root / "onnx_link").symlink_to(root / "onnx", target_is_directory=True)
    names = {
        "onnx_link": root / "onnx_link",
        "root": root,
        "teacher": teacher,
        "student": root / "student",
        "onnx": root / "onnx",
        "analysis": root / "analysis",
        "empty": texts / "empty.txt",
        "binary": texts / "binary.bin",
        "latin1": texts / "latin1.txt",
        "one_token": texts / "one.txt",
        "train": train,
        "short": texts / "short.txt",
        "bad_json": texts / "importance.json",
        "nan_profile": texts / "nan.toml",
        **files,
    }
    return root, {k: str(v) for k, v in names.items()}


@pytest.mark.parametrize("kind, command, message", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_hostile_input(kind, command, message, world, tmp_path, capsys):
    import shlex

    root, names = world
    fresh = tmp_path / "fresh"
    argv = [a.format(**names, fresh=fresh) for a in shlex.split(command)]
    if argv[0] == "compress" and "--resume" not in argv:  # the tiny teacher's sizes; no NTK analysis needed
        stock_or_sized = ("uniform", "auto", "slim", "depth", "depth+slim")
        cli = "--method" in argv and argv[argv.index("--method") + 1] not in stock_or_sized
        argv += [
            *(["--seq-len", "64"] if "--seq-len" not in argv else []),
            *(["--protect", "0,3"] if cli and "--protect" not in argv else []),
        ]
    before = _tree(root)
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert _tree(root) == before, "an existing file was changed, removed or added"
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*")), "a refused command left output behind"


def test_the_table_covers_every_kind():
    kinds = [k for k, _, _ in CASES]
    assert len(CASES) >= 150 and {"loss", "wrong", "crash", "tampered", "bounds", "hang", "unclear"} == set(kinds)


def test_generation_past_the_positions_returns_the_text_and_warns(world, capsys):
    _, names = world
    prompt = "the history of the city " * 20  # ~100 tokens of the tiny teacher's 128 positions
    assert main(["generate", names["onnx"], "--prompt", prompt, "--max-new-tokens", "64"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(prompt) and len(out) > len(prompt)
    assert "warning: stopped after" in err and "of 64 new tokens at the model's 128 positions" in err


def test_a_full_disk_is_named_before_export_starts(world, tmp_path, capsys, monkeypatch):
    import collections

    _, names = world
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    assert main(["export", names["teacher"], "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "this export needs about" in err and "MB free" in err and not (tmp_path / "o").exists()


def test_overwrite_replaces_only_after_the_new_result_is_complete(world, tmp_path, monkeypatch):
    """An export that fails half-way through --overwrite leaves the old artifact as it was."""
    from clidep.commands import export as artifact
    from clidep.errors import ClidepError

    _, names = world
    old = tmp_path / "old"
    shutil.copytree(names["onnx"], old)
    before = _tree(old)

    def broken_write_json(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("clidep.files.write_json", broken_write_json)
    with pytest.raises(OSError):
        artifact.export_artifact(names["teacher"], old, overwrite=True, ppl_tokens=256)
    assert _tree(old) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".old")]
    monkeypatch.undo()
    with pytest.raises(ClidepError, match="pass --overwrite"):
        artifact.export_artifact(names["teacher"], old, ppl_tokens=256)


def test_a_failed_compress_leaves_nothing_that_blocks_the_rerun(world, tmp_path, capsys):
    _, names = world
    out = tmp_path / "s"
    args = [
        "compress",
        names["missing"],
        "--out",
        str(out),
        "--method",
        "cli",
        "--width",
        "32",
        "--protect",
        "0,3",
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-every",
        "0",
        "--data",
        names["root"] + "/train.txt",
    ]
    assert main(args) == 2  # fails after planning, while loading the teacher's weights
    assert not out.exists()
    args[1] = names["teacher"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    assert (out / "compress.json").is_file()


def _compress_args(names: dict, out: Path, *extra: str, data: bool = True) -> list[str]:
    return [
        "compress",
        names["teacher"],
        "--out",
        str(out),
        "--method",
        "cli",
        "--width",
        "32",
        "--protect",
        "0,3",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-every",
        "0",
        *(["--data", names["root"] + "/train.txt"] if data else []),
        *extra,
    ]


def test_a_full_disk_is_named_before_compress_starts(world, tmp_path, capsys, monkeypatch):
    import collections

    _, names = world
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6))
    assert main(_compress_args(names, tmp_path / "s", "--steps", "4")) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "this compress run (662,080 parameters, 2 checkpoints at a time) needs about 21 MB but" in line
    assert "has 5 MB free" in line and not (tmp_path / "s").exists() and "Traceback" not in err


@pytest.mark.parametrize("failure", ["torch", "safetensors"])
def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one_for_resume(
    world, tmp_path, capsys, monkeypatch, failure
):
    """The disk fills while the second checkpoint is written (in the words torch's optimizer writer or
    safetensors' model writer uses for it, as seen on a full tmpfs): one line, the first checkpoint
    intact, and --resume finishes the run once space is back."""
    from accelerate import Accelerator
    from safetensors import SafetensorError

    _, names = world
    out = tmp_path / "s"
    real = Accelerator.save_state
    calls = []

    def filling(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "model.safetensors").write_bytes(b"half")
            if failure == "safetensors":
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3456 vs 3400")
        return real(self, path, *a, **k)

    monkeypatch.setattr(Accelerator, "save_state", filling)
    args = _compress_args(names, out, "--steps", "4", "--save-every", "2")
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "writing the checkpoint at step 4 failed (" in errors[0], err[-2000:]
    assert f"the checkpoint at step 2 in {out / 'checkpoint'} is complete" in errors[0] and "--resume" in errors[0]
    assert not (out / "checkpoint.tmp").exists() and (out / "checkpoint" / "COMPLETE").exists()
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads((out / "compress.json").read_text())["steps"] == 4


def _hide_offline_folder(monkeypatch, tmp_path):
    """As on a user's machine: no ../shared/data beside clidep or the working directory, no variable."""
    import clidep.data as data

    monkeypatch.delenv("CLIDEP_SHARED_DATA", raising=False)
    monkeypatch.setattr(data, "_PROJECT_ROOT", tmp_path / "site" / "clidep-install")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(data, "_said", set())


def test_without_the_offline_folder_or_the_hub_the_error_names_both_ways_out(world, tmp_path, capsys, monkeypatch):
    """The hub is unreachable as HF_HUB_OFFLINE makes it (the real datasets and huggingface_hub calls, which
    refuse at once); left to time out against this machine's blocked network they took 47 s of the suite."""
    import datasets.config
    import huggingface_hub.constants

    _, names = world
    _hide_offline_folder(monkeypatch, tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert main(["eval", names["teacher"]]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "'wikitext-test' needs the offline data folder" in line and "set CLIDEP_SHARED_DATA" in line
    assert "run where the hub is reachable" in line and "Traceback" not in err
    assert "reads the dataset hub's wikitext-103 test split instead" in err
    assert main(_compress_args(names, tmp_path / "s", "--steps", "1", data=False)) == 2  # no --data: the hub's
    assert "'wiki-en' needs the offline data folder" in capsys.readouterr().err


def test_without_the_offline_folder_the_defaults_read_the_hub(world, tmp_path, capsys, monkeypatch):
    """The hub itself is not reachable here: its reader is replaced by one that serves a fixed text,
    so what is tested is which split each default asks for, and the notice."""
    import clidep.data as data

    _, names = world
    _hide_offline_folder(monkeypatch, tmp_path)
    asked = []
    text = (Path(names["root"]) / "train.txt").read_text()[:40_000]
    monkeypatch.setattr(data, "_hub_split", lambda name, split, standing_in=None: asked.append((name, split)) or [text])
    assert main(["eval", names["teacher"], "--max-tokens", "300", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["data"] == "wikitext-test: wikitext-103 (hub Salesforce/wikitext, test split)"
    assert err.count("note: no offline data folder") == 1 and asked == [("wikitext-103", "test")]
    assert main(_compress_args(names, tmp_path / "s", "--steps", "1", data=False)) == 0, capsys.readouterr().err[-2000:]
    assert ("wikitext-103", "train") in asked and ("wikitext-103", "validation") in asked
    assert json.loads((tmp_path / "s" / "compress.json").read_text())["data"] == "wiki-en"


def test_an_export_without_a_manifest_runs_as_a_foreign_graph_said_once(world, tmp_path, capsys):
    _, names = world
    foreign = Path(shutil.copytree(names["onnx"], tmp_path / "foreign"))
    (foreign / "manifest.json").unlink()
    assert main(["generate", str(foreign), "--prompt", "the city", "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("the city") and err.count("has no manifest.json: running its graph as a foreign model") == 1


def test_eval_on_an_export_scores_the_graph_as_export_did(world):
    """eval of an export directory runs its graph through ONNX Runtime, with the protocol export used."""
    from clidep.commands.eval import evaluate

    _, names = world
    manifest = json.loads((Path(names["onnx"]) / "manifest.json").read_text())
    proto = manifest["ppl_protocol"]
    result = evaluate(
        names["onnx"],
        data="wikitext-test",
        max_tokens=proto["tokens"],
        context=proto["context"],
        stride=proto["stride"],
    )
    assert result.ppl == pytest.approx(manifest["variants"][0]["ppl"], rel=1e-6)
    torch_result = evaluate(
        names["teacher"],
        data="wikitext-test",
        max_tokens=proto["tokens"],
        context=proto["context"],
        stride=proto["stride"],
    )
    assert result.ppl == pytest.approx(torch_result.ppl, rel=1e-4)


def test_digests_are_cached_by_inode_size_and_times(world, tmp_path, monkeypatch):
    """A graph is hashed once; a file rewritten in place is hashed again and caught, with a new modification
    time or with the old one restored (os.utime), since the change time cannot be set back."""
    import os

    from clidep.runtime import verify

    _, names = world
    monkeypatch.setenv("CLIDEP_CACHE", str(tmp_path / "cache"))
    export = Path(shutil.copytree(names["onnx"], tmp_path / "e"))
    hashed = []
    real = verify.file_sha256
    graphs = lambda p: hashed.append(Path(p).name) if Path(p).suffix == ".onnx" else None  # noqa: E731
    monkeypatch.setattr(verify, "file_sha256", lambda p: graphs(p) or real(p))
    verify.checked_graph(export / "model.onnx")
    verify.checked_graph(export / "model.onnx")
    assert hashed == ["model.onnx"]
    graph = bytearray((export / "model.onnx").read_bytes())
    graph[-1] ^= 0xFF
    st = (export / "model.onnx").stat()
    (export / "model.onnx").write_bytes(bytes(graph))
    os.utime(export / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with pytest.raises(verify.ClidepError, match="its sha256 differs from the manifest's"):
        verify.checked_graph(export / "model.onnx")
    assert hashed == ["model.onnx", "model.onnx"]
    # rewritten again with its modification time restored to the nanosecond: the change time gives it away
    shutil.copy(names["onnx"] + "/model.onnx", export / "model.onnx")
    verify.checked_graph(export / "model.onnx")
    st = (export / "model.onnx").stat()
    (export / "model.onnx").write_bytes(bytes(graph))
    os.utime(export / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (export / "model.onnx").stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(verify.ClidepError, match="its sha256 differs from the manifest's"):
        verify.checked_graph(export / "model.onnx")


def test_no_record_with_a_non_finite_figure_is_written(tmp_path):
    from clidep.bench import writer as report_writer
    from clidep.errors import ClidepError
    from clidep.files import write_json

    with pytest.raises(ClidepError, match=r"would hold a non-finite figure \(models.1.tg_tps.32.mean = inf\)"):
        write_json(tmp_path / "bench.json", {"models": [{"ok": 1.0}, {"tg_tps": {"32": {"mean": float("inf")}}}]})
    with pytest.raises(ValueError):
        report_writer.jsonl([{"decode_ms_p50": float("nan")}])
    assert not list(tmp_path.iterdir())


def test_a_long_run_needs_yes_and_starts_with_it(world):
    """--yes lifts exactly the duration check (the run itself is not started here)."""
    from clidep.bench.config import BenchConfig
    from clidep.bench.measure import check_duration as _check_duration
    from clidep.bench.models import model_files
    from clidep.errors import ClidepError

    _, names = world
    files = model_files([names["onnx"]], log=lambda m: None)
    host = {"mem_bandwidth_gbs": 10.0}
    _check_duration(files, BenchConfig(reps=5), [1], host)
    with pytest.raises(ClidepError, match="estimated at about .* hours"):
        _check_duration(files, BenchConfig(reps=100_000), [1], host)
    _check_duration(files, BenchConfig(reps=100_000, yes=True), [1], host)


def test_no_code_from_a_folder_clidep_reads_is_ever_run(world, tmp_path):
    """A cli_gpt2 export carries config.py and modeling code (for transformers users without clidep). clidep
    has its own classes: `eval` of that export, in a real process with a user ready to answer `y` to
    transformers' remote-code question, neither asks it nor runs the folder's code, and --json stays JSON."""
    import subprocess
    import sys

    from clidep.commands.export import export_artifact
    from clidep.runtime.verify import file_records

    _, names = world
    export = tmp_path / "student-onnx"
    export_artifact(names["student"], export, ppl_tokens=256, genai=False)
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('the folder ran')\n"
    planted = [p for p in export.glob("*.py")]
    assert planted, "a cli_gpt2 export carries its code for transformers users"
    for p in planted:
        p.write_text(p.read_text() + code)
    # and the manifest rewritten to match, as a careful attacker would: the check of its files passes
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["files"] = file_records(export)
    (export / "manifest.json").write_text(json.dumps(manifest))
    args = [sys.executable, "-m", "clidep", "eval", str(export), "--data", "python-docs-valid", "--max-tokens", "300"]
    proc = subprocess.run([*args, "--json"], input="y\ny\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), "code from the folder ran"
    assert json.loads(proc.stdout)["tokens"] == 300 and "remote code" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "weights, label",
    [("float16", "float16"), ("bfloat16", "bfloat16"), ("float32", "float16"), ("mixed", "bfloat16")],
)
def test_half_precision_teachers_are_computed_in_fp32(weights, label, world, tmp_path, capsys):
    """fp16 and bf16 checkpoints, and fp32 weights whose config says float16 (common on the hub), load as fp32
    models whose logits are the checkpoint's; a slim student distils from one and exports."""
    import torch

    from clidep.model.convert import load_model

    _, names = world
    teacher = Path(shutil.copytree(names["teacher"], tmp_path / "t"))
    weights_in = {  # "mixed": every other tensor fp16, the rest fp32, as a partial conversion leaves them
        k: v.to(torch.float16 if weights == "mixed" and i % 2 else getattr(torch, weights, torch.float32))
        for i, (k, v) in enumerate(sorted(load_file(teacher / "model.safetensors").items()))
    }
    save_file(weights_in, teacher / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "torch_dtype": label, "dtype": label}))
    model = load_model(teacher)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    reference = load_model(names["teacher"])
    ids = torch.arange(1, 33)[None]
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
    assert torch.allclose(got, want, atol=0.1 if weights != "float32" else 1e-6)
    if weights == "bfloat16":
        common = ["--data", names["root"] + "/train.txt", "--seq-len", "64", "--eval-every", "0", "--steps", "1"]
        assert (
            main(
                ["compress", str(teacher), "--out", str(tmp_path / "s"), "--method", "slim", "--ratio", "1.5", *common]
            )
            == 0
        )
        assert main(["export", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--int8", "--ppl-tokens", "256"]) == 0
    if (
        weights == "float16"
    ):  # the bottleneck method and eval too: eval's figure is the fp32 teacher's, to fp16 rounding
        common = ["--data", names["root"] + "/train.txt", "--seq-len", "64", "--eval-every", "0", "--steps", "1"]
        uniform = ["compress", str(teacher), "--out", str(tmp_path / "u"), "--method", "uniform", "--ratio", "1.2"]
        assert main([*uniform, *common]) == 0
        capsys.readouterr()
        figures = []
        for folder in (teacher, names["teacher"]):
            assert main(["eval", str(folder), "--data", "python-docs-valid", "--max-tokens", "256", "--json"]) == 0
            figures.append(json.loads(capsys.readouterr().out)["ppl"])
        assert abs(figures[0] / figures[1] - 1) < 1e-3, figures


def test_a_batch_past_memory_is_scored_in_smaller_batches_with_the_same_figure(world, monkeypatch, capsys):
    """eval --batch-size 100000 on an export asked for all its windows' logits at once; it scores as many as
    a quarter of the available memory holds, says so, and gives the figure --batch-size 1 gives."""
    import collections

    import psutil

    _, names = world
    args = ["eval", names["onnx"], "--data", "python-docs-valid", "--max-tokens", "1024", "--json"]
    assert main([*args, "--batch-size", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    memory = collections.namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(3 * 4 * 4 * 128 * 8192))  # 3 windows' logits, x4
    assert main([*args, "--batch-size", "100000"]) == 0
    out, err = capsys.readouterr()
    assert "note: --batch-size 100000 would hold" in err and "scoring 3 windows at a time" in err
    assert json.loads(out)["ppl"] == pytest.approx(one["ppl"], rel=1e-5)


def test_a_tokenizer_larger_than_the_embedding_is_refused_by_every_command(world, tmp_path, capsys):
    """An 8,192-token tokenizer beside a 4,000-row embedding: ids past row 3,999 crashed ONNX Runtime."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from clidep.data import load_tokenizer

    _, names = world
    small = tmp_path / "small-vocab"
    config = GPT2Config(
        vocab_size=4000, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    GPT2LMHeadModel(config).save_pretrained(small)
    load_tokenizer(names["teacher"]).save_pretrained(small)
    common = ["--data", names["root"] + "/train.txt", "--seq-len", "64", "--steps", "1"]
    for argv in (
        ["eval", str(small)],
        ["export", str(small), "--out", str(tmp_path / "o")],
        ["compress", str(small), "--out", str(tmp_path / "s"), "--method", "slim", "--ratio", "1.2", *common],
    ):
        assert main(argv) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "has 8,192 tokens but the model's embedding 4,000 rows" in errors[0], argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-vocab"]


def test_a_foreign_graph_with_a_larger_tokenizer_is_refused_by_every_reader(world, tmp_path, capsys):
    """An export without a manifest (nothing vouches for its files) whose tokenizer gained ten tokens past the
    graph's 8,192 rows: eval, generate and bench --ppl refuse it by the graph's own vocabulary."""
    from clidep.data import load_tokenizer

    _, names = world
    foreign = Path(shutil.copytree(names["onnx"], tmp_path / "foreign", symlinks=True))
    (foreign / "manifest.json").unlink()
    tokenizer = load_tokenizer(names["teacher"])
    tokenizer.add_tokens([f"zzword{i}" for i in range(10)])
    tokenizer.save_pretrained(foreign)
    for argv in (
        ["eval", str(foreign)],
        ["generate", str(foreign), "--prompt", "the river"],
        ["bench", str(foreign), "--device", "host", "--ppl", "--reps", "1", "--out", str(tmp_path / "b")]
        + ["--prompt-lens", "16", "--depth", "16", "--gen", "64"],
    ):
        assert main(argv) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "has 8,202 tokens but the model's embedding 8,192 rows" in errors[0], argv
    assert not (tmp_path / "b").exists()


def test_a_failed_export_leaves_no_folder_it_made(world, tmp_path, capsys):
    """--out under folders that do not exist yet: a run that fails removes the ones it made, and only those."""
    _, names = world
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "onnx"
    assert main(["export", names["missing"], "--out", str(out)]) == 2
    assert "weights missing" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []


@pytest.mark.parametrize(
    "command, written",
    [
        ("eval {teacher} --json --data {train} --max-tokens 256", []),
        ("eval {onnx} --data {train} --max-tokens 256", []),
        ("generate {onnx} --prompt 'the river' --max-new-tokens 4", []),
        ("devices --show raspberry-pi-5", []),
        ("analyze {teacher} --out {fresh} --samples 1 --probes 2", ["importance.json", "importance.png"]),
        ("export {teacher} --out {fresh} --int8 --ppl-tokens 256 --no-genai", ["manifest.json", "model.int8.onnx"]),
        pytest.param(  # no validation: the text's perplexity (three times, fp32 to int4) is not what is tested
            "compress {teacher} --out {fresh} --method slim --width 32 --steps 1 --seq-len 64 --data {train} --eval-every 0",
            ["model.safetensors", "run.json"],
            id="compress {teacher} --out {fresh} --method slim --steps 1",
        ),
    ],
)
def test_every_command_into_a_closed_pipe_keeps_its_outputs_and_says_so(
    command, written, world, tmp_path, monkeypatch, capsys
):
    """Every command that prints: its files are complete before it prints, and a closed stdout is one error
    line and exit 141 (a shell's status for SIGPIPE), never a silent exit 1 or a lost result."""
    import shlex

    _, names = world
    fresh = tmp_path / "fresh"
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main([a.format(**names, fresh=fresh) for a in shlex.split(command)]) == 141
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "standard output was closed" in errors[0] and "Traceback" not in err, err[-2000:]
    assert all((fresh / name).is_file() for name in written), sorted(p.name for p in fresh.iterdir())
