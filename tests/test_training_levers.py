"""The training-step lever that became a default (fused AdamW) computes what eager computes,
and the lever bench measures what it says. No timings are asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import training_levers  # noqa: E402
import training_speed  # noqa: E402

from chordkd.training.student import StudentModule, adamw  # noqa: E402


def _train(implementation: str, steps: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(initial, final) weights of a small BTC after ``steps`` AdamW steps on one fixed batch,
    dropout off, with the given AdamW kernel; the same initial weights for every kernel."""
    from chordkd.models import ChordModel, build_student
    from chordkd.training.losses import supervised_loss

    torch.manual_seed(0)
    model = ChordModel(build_student("btc", "small", 170), mean=-7.0, std=2.0).eval()
    g = torch.Generator().manual_seed(1)
    x = -7.0 + 2.0 * torch.randn(4, 108, 144, generator=g)
    y = torch.randint(0, 170, (4, 108), generator=g)
    init = [p.detach().clone() for p in model.parameters()]
    opt = adamw(model.parameters(), 1e-3, 1e-5, implementation)
    for _ in range(steps):
        opt.zero_grad()
        supervised_loss(model(x), y, "focal", 2.0).backward()
        opt.step()
    return init, [p.detach().clone() for p in model.parameters()]


def _max_abs_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_fused_adamw_takes_the_per_tensor_loops_first_step_to_float_rounding():
    init, loop = _train("for-loop", steps=1)
    _, fused = _train("fused", steps=1)
    assert _max_abs_difference(loop, init) > 5e-4  # the step moved the weights (lr 1e-3) ...
    assert _max_abs_difference(loop, fused) < 6e-8  # ... and the kernels differ by an ulp of O(1)


def test_fused_adamw_stays_with_the_per_tensor_loop_over_steps():
    # From step 2 on, gradients carry the first step's rounding, and Adam's normalisation
    # magnifies it where gradients are near zero: the bound is relative to the movement.
    init, loop = _train("for-loop", steps=3)
    _, fused = _train("fused", steps=3)
    assert _max_abs_difference(loop, fused) < 1e-3 * _max_abs_difference(loop, init)


def test_adamw_kernels_take_the_textbook_first_step():
    # AdamW's first step by hand (Loshchilov & Hutter): decay, then lr * m_hat / (sqrt(v_hat) + eps)
    lr, wd, eps, b1, b2 = 1e-2, 0.1, 1e-8, 0.9, 0.999
    w0 = torch.tensor([0.5, -1.0, 2.0])
    grad = torch.tensor([0.3, -0.2, 1e-3])
    m_hat = (1 - b1) * grad / (1 - b1)
    v_hat = (1 - b2) * grad**2 / (1 - b2)
    expected = w0 * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
    for impl in ("fused", "foreach", "for-loop"):
        w = torch.nn.Parameter(w0.clone())
        w.grad = grad.clone()
        adamw([w], lr, wd, impl).step()
        np.testing.assert_allclose(w.detach().numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_student_module_defaults_to_fused_adamw():
    module = StudentModule(student="btc", size="small", optim={"schedule": "constant"})
    opt = module.configure_optimizers()
    assert opt.defaults["fused"] is True


def test_auto_adamw_is_foreach_under_16_mixed_whose_scaler_cannot_clip_a_fused_step():
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = adamw(p, 1e-3, 0.0, "auto", "16-mixed")
    assert not opt.defaults.get("fused") and opt.defaults["foreach"] is True


def test_an_unknown_adamw_kernel_is_refused_by_name():
    with pytest.raises(ValueError, match="implementation"):
        adamw([torch.nn.Parameter(torch.zeros(1))], 1e-3, 0.0, "turbo")


def test_an_unknown_adamw_kernel_in_a_config_names_the_key():
    from chordkd.errors import ConfigError
    from chordkd.training.config import load_config

    with pytest.raises(ConfigError, match="optim.implementation"):
        load_config(None, ["optim.implementation=turbo"])


def test_lever_equivalence_separates_rounding_from_a_changed_training():
    fused = training_levers.weight_deviation("btc", "adamw fused", steps=2, batch=4)
    assert fused["max_abs_weight_difference"] < 1e-3 * fused["max_abs_weight_update"]
    batch = training_levers.weight_deviation("btc", "batch 16", steps=2, batch=4)  # other data
    assert batch["max_abs_weight_difference"] > 0.1 * batch["max_abs_weight_update"]


def test_levers_run_round_by_round_with_paired_ratios():
    run = training_levers.interleaved("btc", "small", ["eager", "adamw fused"], rounds=3, warm_up=1, batch=4)
    for row in run["rows"].values():
        assert len(row["step_seconds"]) == 3
        assert row["frames_per_second_min"] <= row["frames_per_second"] <= row["frames_per_second_max"]
    eager = run["rows"]["eager"]
    assert eager["over_eager"] == eager["over_eager_min"] == eager["over_eager_max"] == 1.0


def test_step_statistics_give_the_median_step_and_its_spread():
    times = [0.5, 0.1, 0.4, 0.2, 0.3]  # seconds; 100 frames per step
    stats = training_speed.step_statistics(times, 100)
    assert stats["frames_per_second"] == pytest.approx(100 / np.median(times))
    assert stats["frames_per_second_min"] == pytest.approx(100 / 0.5)
    assert stats["frames_per_second_max"] == pytest.approx(100 / 0.1)
    lo, hi = stats["frames_per_second_iqr"]
    assert lo == pytest.approx(100 / np.percentile(times, 75))
    assert hi == pytest.approx(100 / np.percentile(times, 25))
