"""SelectiveKD: per-frame weights by rule, the combined loss, and its place in stage 2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from chordkd.cli import main as cli
from chordkd.training.distillation import SelectiveKD, confidence_weights
from chordkd.training.losses import IGNORE, kl_per_frame


def peaked(confidences: list[float], n_classes: int = 4) -> torch.Tensor:
    """Distributions [1, T, C] whose top probability is each given confidence (class 0)."""
    rows = []
    for c in confidences:
        rest = (1 - c) / (n_classes - 1)
        rows.append([c] + [rest] * (n_classes - 1))
    return torch.tensor([rows])


def test_paper_rule_zero_below_0_1_one_to_0_9_then_down_to_0_2():
    probs = peaked([0.26, 0.3, 0.5, 0.9, 0.95, 1.0], n_classes=4)
    w = confidence_weights(probs, "paper")[0]
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.6, 0.2]))
    low = confidence_weights(torch.full((1, 1, 20), 0.05), "paper")  # c = 0.05 < 0.1
    assert low.item() == 0.0


def test_threshold_rule_keeps_frames_at_or_above_theta():
    w = confidence_weights(peaked([0.5, 0.7, 0.71, 0.99]), "threshold", theta=0.7)[0]
    assert w.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_agree_rule_keeps_frames_where_teacher_argmax_is_the_ground_truth():
    probs = peaked([0.8, 0.8, 0.8])  # teacher argmax is class 0 everywhere
    labels = torch.tensor([[0, 2, 0]])
    assert confidence_weights(probs, "agree", labels=labels)[0].tolist() == [1.0, 0.0, 1.0]


def test_all_rule_weights_every_frame():
    assert confidence_weights(peaked([0.3, 0.99]), "all")[0].tolist() == [1.0, 1.0]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown KD rule"):
        SelectiveKD(rule="sometimes")


def _full_cache_batch(teacher_logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """A batch with a full-logit teacher (K = C): the rebuilt distribution is exact."""
    logz = torch.logsumexp(teacher_logits, -1)
    c = teacher_logits.shape[-1]
    return {
        "teacher_values": (teacher_logits - logz[..., None]).half(),
        "teacher_indices": torch.arange(c).expand_as(teacher_logits),
        "teacher_logz": logz,
        "labels": labels,
    }


def test_loss_is_alpha_t2_weighted_kl_plus_one_minus_alpha_supervised():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 6) * 3
    student = torch.randn(2, 5, 6)
    labels = torch.randint(0, 6, (2, 5))
    labels[1, 4] = IGNORE  # padding counts nowhere
    batch = _full_cache_batch(teacher, labels)
    sup = torch.tensor(1.7)
    logs: dict = {}
    kd = SelectiveKD(alpha=0.3, temperature=3.0, rule="all")
    total = kd.combine(None, batch, student, sup, logs)

    t_logp = torch.log_softmax(batch["teacher_values"].float() / 3.0, -1)  # exact: K = C
    kl = kl_per_frame(t_logp, student, 3.0)
    valid = labels != IGNORE
    expected_kd = (kl * valid).sum() / valid.sum()
    torch.testing.assert_close(logs["train/kd_loss"], expected_kd, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(total, 0.3 * 9.0 * expected_kd + 0.7 * sup, rtol=1e-4, atol=1e-5)
    assert logs["train/kd_weighted_frac"].item() == 1.0


def test_alpha_zero_leaves_the_supervised_loss_unchanged():
    teacher, student = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    batch = _full_cache_batch(teacher, torch.zeros(1, 4, dtype=torch.long))
    sup = torch.tensor(0.42)
    assert SelectiveKD(alpha=0.0).combine(None, batch, student, sup, {}) is sup


def test_kd_without_teacher_outputs_says_what_to_do():
    with pytest.raises(RuntimeError, match="chordkd label"):
        SelectiveKD().combine(None, {"labels": torch.zeros(1, 2)}, torch.zeros(1, 2, 3),
                              torch.tensor(0.0), {})


@pytest.mark.slow
def test_stage2_with_alpha_zero_equals_the_baseline_recipe(tone_corpus, fixture_btc, tmp_path):
    from test_training import tiny_config

    from chordkd.training.fit import fit

    cache = tmp_path / "cache"
    assert cli(["label", "--teacher", str(fixture_btc / "checkpoint.pt"), "--audio",
                str(tone_corpus), "--out", str(cache)]) == 0
    init = fit(tiny_config(tone_corpus, tmp_path, "trainer.max_epochs=1", f"run_dir={tmp_path}/init"))
    common = (f"init={init['best_checkpoint']}", "trainer.max_epochs=2", "optim.schedule=constant")
    base = fit(tiny_config(tone_corpus, tmp_path, *common, f"run_dir={tmp_path}/base"))
    kd0 = fit(tiny_config(tone_corpus, tmp_path, *common, f"run_dir={tmp_path}/kd0",
                          f"data.teacher_cache={cache}", "kd.enabled=true", "kd.alpha=0.0"))
    kd3 = fit(tiny_config(tone_corpus, tmp_path, *common, f"run_dir={tmp_path}/kd3",
                          f"data.teacher_cache={cache}", "kd.enabled=true", "kd.alpha=0.3"))

    def weights(summary):
        ckpt = Path(summary["run_dir"]) / "checkpoints" / "last.ckpt"
        return torch.load(ckpt, weights_only=True)["state_dict"]

    a, b, c = weights(base), weights(kd0), weights(kd3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # and KD with alpha > 0 does change them
    assert math.isfinite(kd3["best_score"])


def test_rules_read_the_tempered_confidence_unless_told_to_read_the_teachers_own():
    # a teacher 80% sure over 170 classes: at T = 3 its top probability falls below 0.1, so the
    # paper rule (as the public code computes it) distils nothing; on the teacher's own
    # confidence every frame counts
    c = 170
    probs = torch.full((1, 4, c), 0.2 / (c - 1))
    probs[..., 0] = 0.8
    teacher_logits = probs.log()
    batch = _full_cache_batch(teacher_logits, torch.zeros(1, 4, dtype=torch.long))
    student, sup = torch.randn(1, 4, c), torch.tensor(1.0)
    tempered_logs: dict = {}
    tempered = SelectiveKD(alpha=0.3, temperature=3.0, rule="paper")
    assert tempered.combine(None, batch, student, sup, tempered_logs).item() == pytest.approx(0.7)
    assert tempered_logs["train/kd_weighted_frac"].item() == 0.0
    own_logs: dict = {}
    own = SelectiveKD(alpha=0.3, temperature=3.0, rule="paper", confidence="teacher")
    assert own.combine(None, batch, student, sup, own_logs).item() > 0.7 + 1e-3
    assert own_logs["train/kd_weighted_frac"].item() == 1.0
    with pytest.raises(ValueError, match="confidence"):
        SelectiveKD(confidence="raw")
