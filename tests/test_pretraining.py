"""Self-supervised pre-training: views keep the chord, the losses fall on a tiny corpus, and
the checkpoint starts stage 2 (encoder only, fresh classifier) and serves as a probe encoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from chordkd.models.loading import load_model
from chordkd.pretraining.augment import ViewAugment
from chordkd.pretraining.objectives import info_nce
from chordkd.pretraining.pretrain import pretrain
from chordkd.training.config import load_config, run_dir
from chordkd.training.fit import fit

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def ssl_config(corpus: Path, runs: Path, experiment: str, *extra: str):
    return load_config(EXPERIMENTS / experiment, [
        f"data.train={corpus}", f"data.valid={corpus}", "data.test=null", "model.size=small",
        "data.window=32", "data.batch_size=8", "trainer.max_epochs=12", f"runs_dir={runs}",
        "logger.kind=csv", "trainer.enable_progress_bar=false", "optim.lr=2e-3", *extra,
    ])


def test_views_keep_every_pitch_where_it_is():
    """Gain, EQ and noise change levels, never which bins hold the notes: each frame's
    loudest bin (the planted pitch) is the same in both views; no pitch shift happens."""
    x = torch.full((4, 20, 144), math.log(1e-3))
    peaks = torch.randint(0, 144, (4, 20))
    x.scatter_(2, peaks[..., None], 2.0)
    view = ViewAugment(gain_db=6, eq_db=6, noise_db=-30, time_masks=0)(
        x, torch.Generator().manual_seed(0))
    assert not torch.allclose(view, x)
    assert torch.equal(view.argmax(-1), peaks)


def test_info_nce_is_log_n_at_chance_and_near_zero_for_matched_views():
    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    same = torch.nn.functional.normalize(torch.ones(16, 8), dim=-1)
    assert info_nce(same, same, 0.1).item() == pytest.approx(math.log(16), rel=1e-5)
    eye = torch.eye(16)
    assert info_nce(eye, eye, 0.05).item() < 1e-3
    assert info_nce(z, z, 0.1).item() < info_nce(z, z.roll(1, 0), 0.1).item()


@pytest.fixture(scope="module")
def contrastive_run(tone_corpus, tmp_path_factory):
    return pretrain(ssl_config(tone_corpus, tmp_path_factory.mktemp("ssl"), "ssl.yaml"))


@pytest.mark.slow
def test_contrastive_loss_falls_and_a_rerun_finds_the_finished_run(contrastive_run, tone_corpus):
    losses = contrastive_run["train_loss_by_epoch"]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])
    again = pretrain(ssl_config(tone_corpus, Path(contrastive_run["run_dir"]).parent, "ssl.yaml"))
    assert again == contrastive_run


@pytest.mark.slow
def test_masked_prediction_loss_falls(tone_corpus, tmp_path):
    losses = pretrain(ssl_config(tone_corpus, tmp_path, "ssl_masked.yaml"))["train_loss_by_epoch"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])


@pytest.mark.slow
def test_ssl_checkpoint_starts_stage_two_with_its_encoder_and_a_fresh_classifier(
        contrastive_run, tone_corpus, tmp_path):
    ssl_ckpt = contrastive_run["best_checkpoint"]
    encoder = load_model(ssl_ckpt)  # also what a probe reads
    assert encoder.encoder_only and encoder.vocabulary == "large"
    # another vocabulary than pre-training's: only an encoder-only checkpoint allows it
    cfg = load_config(EXPERIMENTS / "baseline.yaml", [
        f"init={ssl_ckpt}", "vocabulary=majmin", f"data.train={tone_corpus}",
        f"data.valid={tone_corpus}", "data.test=null", "model.size=small", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.check_val_every_n_epoch=1",
        "optim.schedule=constant", "optim.lr=1e-12", "optim.weight_decay=0", "data.batch_size=2",
        "checkpoint.patience=0", f"runs_dir={tmp_path}", "logger.kind=none",
        "trainer.enable_progress_bar=false",
    ])
    summary = fit(cfg)
    student = load_model(Path(summary["run_dir"]) / "checkpoints" / "last.ckpt")
    assert student.vocabulary == "majmin" and not student.encoder_only
    before, after = encoder.model.state_dict(), student.model.state_dict()
    head = "net.output_layer."
    for k, v in before.items():
        if not k.startswith(head):
            torch.testing.assert_close(after[k], v, rtol=0, atol=1e-6, msg=k)
    assert after[head + "output_projection.weight"].shape[0] == 25
    assert before[head + "output_projection.weight"].shape[0] == 170


@pytest.mark.slow  # a subprocess that imports torch and Lightning: 5-35 s on a loaded machine
def test_pretrain_command_takes_fits_arguments_and_names_its_run_folder():
    import subprocess
    import sys

    from conftest import SUBPROCESS_TIMEOUT

    done = subprocess.run([sys.executable, "-m", "chordkd", "pretrain",
                           str(EXPERIMENTS / "ssl_masked.yaml"), "ssl.mask_ratio=0.5",
                           "--print-run-dir"], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("runs/ssl_masked-btc-")
    # the ssl section is part of the run's identity: another mask ratio, another folder
    assert done.stdout.strip() != str(run_dir(load_config(EXPERIMENTS / "ssl_masked.yaml")))


def test_ssl_settings_are_checked_like_every_other_key():
    from chordkd.errors import ConfigError

    with pytest.raises(ConfigError, match="ssl.objective"):
        load_config(EXPERIMENTS / "ssl.yaml", ["ssl.objective=rotation"])
    with pytest.raises(ConfigError, match="ssl.mask_ratio"):
        load_config(EXPERIMENTS / "ssl_masked.yaml", ["ssl.mask_ratio=1.5"])
