"""clidep.compress.student_init: narrow blocks initialised from the teacher's residual stream."""

from __future__ import annotations

import pytest
import torch

from clidep import CLIGPT2LMHeadModel
from clidep.compress.student_init import init_from_teacher, runs, stream_basis
from clidep.compress.widths import build
from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.model.convert import load_model
from clidep.perplexity import perplexity, torch_logits_fn


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_model(teacher_dir)


def test_teacher_init_starts_close_to_the_teacher(teacher, teacher_dir):
    tok = load_tokenizer(teacher_dir)
    val = tokenize_text(tok, read_text("wiki-en-valid")[0])[:4097]
    calib = torch.from_numpy(tokenize_text(tok, read_text("wiki-en-valid")[0])[-4096:].reshape(16, 256))
    fn = lambda m: perplexity(torch_logits_fn(m.eval()), val, 256, 128, 8).ppl  # noqa: E731
    ref = fn(teacher)
    for method, protect in (("cli", [0, 11]), ("uniform", [])):
        torch.manual_seed(0)
        student = CLIGPT2LMHeadModel(build(teacher.config, method, 84 if method == "cli" else 128, protect))
        random_ppl = fn(student)
        init_from_teacher(student, teacher, calib)
        ppl = fn(student)
        assert ppl < 2.5 * ref < random_ppl / 10, (
            f"{method}: teacher {ref:.1f}, init {ppl:.1f}, random {random_ppl:.1f}"
        )
        if method == "cli":
            for i in protect:
                for (n, a), b in zip(
                    student.transformer.h[i].state_dict().items(), teacher.transformer.h[i].state_dict().values()
                ):
                    assert torch.equal(a, b), f"protected block {i}: {n} differs"
            Q = student.transformer.proj[11].weight  # (d, r): back to full width
            assert torch.allclose(Q.T @ Q, torch.eye(84), atol=1e-4)
            assert torch.equal(student.transformer.proj[1].weight, Q.T)


def test_teacher_init_bridges_runs_of_different_widths(teacher, teacher_dir):
    """An auto schedule (runs of 144, 96 and 112 between full-width blocks): between two runs the
    projection is Q_b^T Q_a, and the student starts as close to the teacher as a uniform one does."""
    from clidep.compress.widths import schedule_head_dims, student_config

    tok = load_tokenizer(teacher_dir)
    text = tokenize_text(tok, read_text("wiki-en-valid")[0])
    val, calib = text[:4097], torch.from_numpy(text[-4096:].reshape(16, 256))
    fn = lambda m: perplexity(torch_logits_fn(m.eval()), val, 256, 128, 8).ppl  # noqa: E731
    widths = [256, 144, 96, 96, 112, 112, 112, 112, 112, 112, 112, 144]
    torch.manual_seed(0)
    student = CLIGPT2LMHeadModel(student_config(teacher.config, widths, schedule_head_dims(teacher.config, widths)))
    init_from_teacher(student, teacher, calib)
    p = student.transformer.proj
    q1, q11 = p[1].weight.T, p[12].weight  # (d, 144): the bases of the runs at blocks 1 and 11 (into / out of them)
    assert torch.allclose(p[2].weight, stream_basis(teacher, calib, [2, 3, 4], 96).T @ q1, atol=1e-5)
    assert torch.allclose(p[11].weight, q11.T @ stream_basis(teacher, calib, list(range(4, 12)), 112), atol=1e-5)
    assert torch.allclose(q11.T @ q11, torch.eye(144), atol=1e-4)
    torch.manual_seed(0)
    uniform = CLIGPT2LMHeadModel(build(teacher.config, "uniform", 128, []))
    init_from_teacher(uniform, teacher, calib)
    assert fn(student) < 1.2 * fn(uniform), "no worse a start than the uniform bottleneck of the same size"


def test_runs_are_maximal_stretches_of_one_narrow_width():
    assert runs([64, 32, 32, 64], 64) == [(1, 3)]
    assert runs([16, 16, 32, 64, 32], 64) == [(0, 2), (2, 3), (4, 5)]
    assert runs([64, 64], 64) == []


def test_the_stream_basis_is_orthonormal_and_keeps_most_of_the_stream(teacher, teacher_dir):
    tok = load_tokenizer(teacher_dir)
    ids = torch.from_numpy(tokenize_text(tok, read_text("wiki-en-valid")[0])[:1024].reshape(4, 256))
    Q = stream_basis(teacher, ids, list(range(1, 12)), 84)  # (d, r)
    assert Q.shape == (teacher.config.n_embd, 84)
    assert torch.allclose(Q.T @ Q, torch.eye(84), atol=1e-4)
    states = []
    hook = teacher.transformer.h[5].register_forward_hook(
        lambda m, a, o: states.append(a[0].reshape(-1, a[0].shape[-1]))
    )
    with torch.no_grad():
        teacher(ids, use_cache=False)
    hook.remove()
    x = states[0]
    kept = (x @ Q).norm() ** 2 / x.norm() ** 2  # energy of the stream inside the basis
    random = torch.linalg.qr(torch.randn(teacher.config.n_embd, 84))[0]
    assert kept > 0.9 and kept > 2 * (x @ random).norm() ** 2 / x.norm() ** 2
