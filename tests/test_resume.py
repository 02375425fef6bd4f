"""Resuming: a rerun trains only what is left, with the early-stopping state it had.

In deterministic mode a rerun that silently trained from scratch ends with the same weights
and step count as a resumed one, so comparing final weights cannot tell resuming from
retraining. These tests record the (epoch, global step) of every training step the rerun
executes, and the epochs at which early stopping ends a run.

A "crash" is an exception raised at the start of a training epoch: the state on disk is then
what a kill at that moment leaves (``last.ckpt`` of the previous epoch, no ``summary.json``).
``tests/test_faults.py`` does the same with a real SIGKILL of ``chordkd fit``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_tone_corpus
from test_training import tiny_config

from chordkd.training.fit import fit
from chordkd.training.seeding import EpochSeed
from chordkd.training.student import StudentModule


class SimulatedKill(RuntimeError):
    pass


def _spy_on_steps(monkeypatch, steps: list[tuple[int, int]]) -> None:
    original = StudentModule.training_step

    def spy(self, batch, batch_idx):
        steps.append((self.current_epoch, self.global_step))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(StudentModule, "training_step", spy)


@pytest.fixture
def executed(monkeypatch) -> list[tuple[int, int]]:
    """(epoch, global step) of every training step run in this test, in order."""
    steps: list[tuple[int, int]] = []
    _spy_on_steps(monkeypatch, steps)
    return steps


def crash_at_epoch(monkeypatch, epoch: int) -> None:
    """Make the next fit die as it starts training epoch ``epoch`` (0-based)."""
    original = EpochSeed.on_train_epoch_start

    def dying(self, trainer, pl_module):
        if trainer.current_epoch == epoch:
            raise SimulatedKill(f"killed at the start of epoch {epoch}")
        original(self, trainer, pl_module)

    monkeypatch.setattr(EpochSeed, "on_train_epoch_start", dying)


def _config(corpus: Path, run: Path, *extra: str):
    # 2 songs of 5 s, one window each, in one batch: one training step per epoch
    return tiny_config(corpus, run.parent, "optim.schedule=constant", "trainer.max_epochs=3",
                       "model.overrides.num_layers=1", f"run_dir={run}", *extra)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return write_tone_corpus(tmp_path_factory.mktemp("corpus"), songs=2, seconds=5.0)


@pytest.fixture(scope="module")
def crashed(small_corpus, tmp_path_factory) -> tuple[Path, int]:
    """A 3-epoch run killed as epoch 2 starts, and its training steps per epoch."""
    run = tmp_path_factory.mktemp("crashed") / "run"
    steps: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as m:
        _spy_on_steps(m, steps)
        crash_at_epoch(m, 2)
        with pytest.raises(SimulatedKill):
            fit(_config(small_corpus, run))
    assert not (run / "summary.json").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    epochs = [e for e, _ in steps]
    assert sorted(set(epochs)) == [0, 1]
    return run, epochs.count(0)


def _copy_of(crashed: tuple[Path, int], tmp_path: Path) -> tuple[Path, int]:
    run, per_epoch = crashed
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", per_epoch


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["auto", "last"])
def test_a_rerun_after_a_crash_trains_only_the_remaining_epoch(
    small_corpus, crashed, tmp_path, executed, resume
):
    run, per_epoch = _copy_of(crashed, tmp_path)
    summary = fit(_config(small_corpus, run, f"resume={resume}"))
    assert executed == [(2, 2 * per_epoch + i) for i in range(per_epoch)]
    assert summary["global_step"] == 3 * per_epoch


@pytest.mark.slow
def test_resume_never_trains_every_epoch_again(small_corpus, crashed, tmp_path, executed):
    run, per_epoch = _copy_of(crashed, tmp_path)
    summary = fit(_config(small_corpus, run, "resume=never"))
    assert [e for e, _ in executed] == [0] * per_epoch + [1] * per_epoch + [2] * per_epoch
    assert executed[0] == (0, 0)
    assert summary["global_step"] == 3 * per_epoch


@pytest.mark.slow
def test_resume_path_continues_from_that_checkpoint_in_a_new_folder(
    small_corpus, crashed, tmp_path, executed
):
    run, per_epoch = crashed
    kept = tmp_path / "epoch1.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", kept)
    summary = fit(_config(small_corpus, tmp_path / "second", f"resume={kept}"))
    assert executed == [(2, 2 * per_epoch + i) for i in range(per_epoch)]
    assert summary["run_dir"] == str(tmp_path / "second")
    assert summary["global_step"] == 3 * per_epoch


def test_resume_path_that_does_not_exist_is_a_config_error_naming_it(small_corpus, tmp_path):
    from chordkd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'resume': no checkpoint at .*missing\.ckpt"):
        fit(_config(small_corpus, tmp_path / "run", f"resume={tmp_path}/missing.ckpt"))


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(small_corpus, tmp_path, executed):
    run = tmp_path / "run"
    first = fit(_config(small_corpus, run, "trainer.max_epochs=1"))
    executed.clear()
    again = fit(_config(small_corpus, run, "trainer.max_epochs=1"))
    assert executed == []
    assert again == json.loads((run / "summary.json").read_text()) == first


def _stopping_config(corpus: Path, run: Path):
    # A learning rate too small to move any prediction: val/mirex never improves after the
    # first validation, so early stopping with patience 2 ends the run after epoch 2 (3 epochs)
    return _config(corpus, run, "optim.lr=1e-30", "checkpoint.patience=2", "trainer.max_epochs=8")


@pytest.mark.slow
def test_early_stopping_state_survives_a_crash(small_corpus, tmp_path, monkeypatch, executed):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_at_epoch(m, 2)
        with pytest.raises(SimulatedKill):
            fit(_stopping_config(small_corpus, run))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    stopper = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    assert stopper["wait_count"] == 1  # epoch 1's validation did not improve on epoch 0's
    executed.clear()
    resumed = fit(_stopping_config(small_corpus, run))
    # restored, one more validation without improvement stops it: epoch 2 alone. A fresh
    # early-stopping state would wait two more validations: epochs 2, 3 and 4.
    assert sorted({e for e, _ in executed}) == [2]
    assert resumed["epochs"] == 3


# -- one trainer per run folder ------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from chordkd.training.fit import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """A run folder whose lock another process holds (as a trainer of it would), and that
    process."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield run, holder
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_a_second_trainer_of_a_folder_in_training_stops_naming_the_holder(
    small_corpus, held_by_another_process, executed
):
    from chordkd.training.fit import RunInUseError

    run, holder = held_by_another_process
    with pytest.raises(RunInUseError, match=rf"{run} is being trained by another process "
                                            rf"\(pid {holder.pid} on "):
        fit(_config(small_corpus, run))
    assert executed == []
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written, nothing lost


def test_the_lock_goes_with_its_holder_even_when_killed(held_by_another_process):
    import signal

    from chordkd.training.fit import RunInUseError, run_lock

    run, holder = held_by_another_process
    with pytest.raises(RunInUseError):
        with run_lock(run):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with run_lock(run):  # no stale lock to clean up
        assert f"pid {os.getpid()} " in (run / ".lock").read_text()


def test_a_run_that_died_in_this_process_leaves_its_folder_free(crashed):
    from chordkd.training.fit import run_lock

    run, _ = crashed
    with run_lock(run):
        pass
