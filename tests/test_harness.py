"""clidep's lm-evaluation-harness backend (quality/harness.py) against the harness's own hf backend, on
clidep's offline tasks (quality/local_tasks.py) and the reference teacher's export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import run


def _requests(task_name: str, limit: int):
    """The harness's own requests for the first LIMIT documents of one of clidep's local tasks."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from clidep.quality.local_tasks import task_folder

    task = get_task_dict([task_name], TaskManager(include_path=str(task_folder())))[task_name]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task.instances


@pytest.fixture(scope="module")
def hf_teacher(teacher_dir):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(teacher_dir), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def onnx_teacher(teacher_artifact):
    from clidep.quality.harness import ClidepLM

    lm = ClidepLM(str(teacher_artifact[0]), batch_size=8)
    yield lm
    lm.close()


def test_lastword_loglikelihoods_match_the_hf_backend(hf_teacher, onnx_teacher):
    """Every request's continuation log-likelihood and greedy flag as the harness's hf backend gives them over
    the torch folder (1e-4), though clidep batches and pads differently."""
    requests = _requests("clidep_lastword", 24)
    ours, theirs = onnx_teacher.loglikelihood(requests), hf_teacher.loglikelihood(requests)
    assert len(ours) == len(theirs) == 24
    np.testing.assert_allclose([ll for ll, _ in ours], [ll for ll, _ in theirs], atol=1e-4, rtol=0)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert len({round(ll, 3) for ll, _ in ours}) > 20  # distinct requests, not one score repeated


def test_rolling_loglikelihoods_match_the_hf_backend(hf_teacher, onnx_teacher):
    """Whole articles in windows of the teacher's 512 positions: the same windows and sums as hf."""
    requests = _requests("clidep_wikitext", 1)
    ours, theirs = onnx_teacher.loglikelihood_rolling(requests), hf_teacher.loglikelihood_rolling(requests)
    assert min(len(onnx_teacher.tok_encode(r.args[0])) for r in requests) > 512  # more than one window
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * max(map(abs, theirs)), rtol=0)


def test_generate_until_matches_the_hf_backend(hf_teacher, onnx_teacher):
    """Greedy continuations cut at the stop string, as hf's."""
    from lm_eval.api.instance import Instance

    prompts = ["The history of the city", "In 1998 , the band released"]
    requests = [
        Instance("generate_until", {}, (p, {"until": ["."], "max_gen_toks": 24, "do_sample": False}), i)
        for i, p in enumerate(prompts)
    ]
    ours = onnx_teacher.generate_until(requests)
    assert ours == hf_teacher.generate_until(requests)
    assert all(text and "." not in text for text in ours)


def test_quantised_files_answer_measurably_apart(teacher_gguf, onnx_teacher):
    """precision= picks the export's int4 graph or a GGUF file (through llama.cpp): the same requests,
    scores near fp32's but not equal to them."""
    from clidep.quality.harness import ClidepLM

    requests = _requests("clidep_lastword", 12)
    fp32 = np.array([ll for ll, _ in onnx_teacher.loglikelihood(requests)])
    for precision in ("int4", "f32", "q4_0"):
        lm = ClidepLM(str(teacher_gguf[0]), precision=precision)
        try:
            found = np.array([ll for ll, _ in lm.loglikelihood(requests)])
        finally:
            lm.close()
        gap = np.abs(found - fp32)
        assert gap.max() < (0.05 if precision == "f32" else 2.0), (precision, gap)
        if precision != "f32":
            assert gap.max() > 1e-3, precision  # a quantised file is not the fp32 one


def test_eval_tasks_offline_one_line_per_task(teacher_artifact):
    out = run("eval", str(teacher_artifact[0]), "--tasks", "clidep_lastword", "--limit", "8", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)["clidep_lastword"]
    assert found["sample_len"] == 8 and 0 <= found["acc"] <= 1 and found["perplexity"] > 1


@pytest.mark.parametrize(
    "args, says",
    [
        (["--tasks", "no_such_task"], "no task no_such_task"),
        (["--tasks", "clidep_lastword", "--reference", "x"], "--tasks and --reference"),
        (["--tasks", "clidep_lastword", "--limit", "0"], "--limit"),
        (["--tasks", "clidep_lastword", "--max-tokens", "512"], "--max-tokens sets the perplexity text"),
        (["--tasks", "clidep_lastword", "--data", "wikitext-test"], "--data sets the perplexity text"),
        (["--limit", "8"], "--limit applies to --tasks only"),
    ],
)
def test_eval_tasks_bad_input_one_line(teacher_artifact, args, says):
    out = run("eval", str(teacher_artifact[0]), *args)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_precision_that_names_no_file_is_refused(teacher_artifact):
    from clidep.errors import ClidepError
    from clidep.quality.harness import ClidepLM

    with pytest.raises(ClidepError, match="precision=int3 names 0"):
        ClidepLM(str(teacher_artifact[0]), precision="int3")


def test_local_tasks_hold_what_they_say():
    """clidep_lastword: paragraphs whose target is a last word they hold earlier; clidep_wikitext: articles."""
    from clidep.quality.local_tasks import task_folder

    folder = task_folder()
    lastword = [json.loads(line)["text"] for line in (folder / "clidep_lastword.jsonl").read_text().splitlines()]
    articles = [json.loads(line)["text"] for line in (folder / "clidep_wikitext.jsonl").read_text().splitlines()]
    assert len(lastword) == 252 and all(t.split(" ")[-1].isalpha() and not t.endswith(".") for t in lastword)
    assert all(t.split(" ")[-1] in t.split(" ")[:-1] for t in lastword)  # a word the passage already holds
    assert len(articles) == 64 and all(a.startswith("= ") for a in articles)


def test_the_harness_command_line_runs_the_backend(teacher_artifact):
    """clidep-lm-eval is lm-eval's own command line with --model clidep registered (its default --device cuda:0
    gets a note, not a failure: the backend runs on the CPU)."""
    import subprocess
    import sys
    from pathlib import Path

    from clidep.quality.local_tasks import task_folder

    command = [str(Path(sys.executable).parent / "clidep-lm-eval"), "run", "--model", "clidep"]
    args = ["--model_args", f"path={teacher_artifact[0]},precision=int4", "--tasks", "clidep_lastword"]
    out = subprocess.run(
        [*command, *args, "--include_path", str(task_folder()), "--limit", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clidep_lastword" in out.stdout and "perplexity" in out.stdout
    assert "runs on the CPU" in out.stderr
