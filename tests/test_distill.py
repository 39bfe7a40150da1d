"""clidep.compress.distill: the loss, the schedule, checkpoints."""

from __future__ import annotations

import math

import torch

from clidep.compress.distill import distill_loss, latest_checkpoint, lr_lambda


def test_incomplete_checkpoint_is_never_read(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "COMPLETE").write_text("")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.old"


def test_the_loss_is_cross_entropy_at_alpha_0_and_zero_kl_against_itself():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    total, kl, ce = distill_loss(logits, logits, ids, alpha=0.0, temperature=2.0)
    assert abs(kl.item()) < 1e-6 and torch.isclose(total, ce)
    expected_ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    assert torch.isclose(ce, expected_ce), "position t predicts token t + 1"
    other = torch.randn(2, 6, 11)
    total, kl, ce = distill_loss(logits, other, ids, alpha=1.0, temperature=2.0)
    assert kl > 0 and torch.isclose(total, kl)


def test_a_sharper_temperature_weights_the_teacher_disagreement_differently():
    torch.manual_seed(1)
    student, teacher, ids = torch.randn(1, 5, 7), torch.randn(1, 5, 7), torch.randint(0, 7, (1, 5))
    kls = [distill_loss(student, teacher, ids, 1.0, t)[1].item() for t in (1.0, 4.0)]
    assert kls[0] != kls[1] and all(k > 0 for k in kls)


def test_the_learning_rate_warms_up_then_decays_to_a_tenth():
    f = lr_lambda(warmup=10, steps=110)
    assert [f(0), f(4), f(9)] == [0.1, 0.5, 1.0]
    assert f(10) == 1.0 and math.isclose(f(60), 0.55) and math.isclose(f(110), 0.1) and f(500) == f(110)
    assert all(f(s) >= f(s + 1) for s in range(10, 120)), "no rise after the warm-up"
