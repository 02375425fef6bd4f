"""Two "nodes" on one machine: two torchrun launches on 127.0.0.1 (gloo), one process each.

What a cluster run relies on: ranks found from the launcher's environment (torchrun's, or the
variables srun sets for SLURM tasks), the label cache merged from both nodes, the same
validation metrics on every rank, and a resumed job that continues where the last one stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tone_corpus

from chordkd.labelling.label import label_corpus
from chordkd.labelling.teacher_cache import cache_differences

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CLUSTER = EXPERIMENTS / "cluster"
TIMEOUT = 300  # seconds for one two-node job, start to finish

# Run by torchrun on each node: chordkd's own fit(), plus a probe that records what each rank
# saw (where training started, the validation metrics it logged) in the folder argv[1].
FIT_WITH_PROBE = '''
import json, sys
from pathlib import Path
import lightning as L
from chordkd.training.config import load_config
from chordkd.training.fit import fit

class Probe(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.dump(trainer, "start", {"epoch": trainer.current_epoch, "step": trainer.global_step,
                                     "world_size": trainer.world_size, "node": trainer.node_rank})

    def on_validation_end(self, trainer, pl_module):
        self.dump(trainer, f"val-epoch{trainer.current_epoch}",
                  {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    def dump(self, trainer, what, obj):
        Path(sys.argv[1], f"{what}-rank{trainer.global_rank}.json").write_text(json.dumps(obj))

Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
fit(load_config(sys.argv[2], sys.argv[3:]), callbacks=[Probe()])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(program: list[str], logs: Path, launcher: str = "torchrun") -> None:
    """Run ``program`` as node 0 and node 1 of a two-node job on 127.0.0.1, one process per
    node; fails with both nodes' logs. ``launcher``:

    - ``"torchrun"``: ``program`` is torchrun's script (or ``-m module``) and its arguments;
    - ``"recipe"``: ``program`` is chordkd's arguments, given to the shipped
      ``experiments/cluster/torchrun.sh``;
    - ``"slurm"``: ``program`` is chordkd's arguments; each process gets the variables ``srun``
      sets for one task of a two-node job (Lightning's SLURM environment reads them).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC"))}
    env.update({"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "CHORDKD_NO_PROGRESS": "1",
                "WANDB_MODE": "offline", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in (0, 1):
        node_env = dict(env)
        if launcher == "recipe":
            cmd = ["bash", str(CLUSTER / "torchrun.sh"), *program]
            node_env.update({"PYTHON": sys.executable, "NNODES": "2", "NPROC": "1",
                             "NODE_RANK": str(node)})
        elif launcher == "slurm":
            cmd = [sys.executable, "-m", "chordkd", *program]
            node_env.update({"SLURM_JOB_NAME": "chordkd", "SLURM_JOB_ID": "4242",
                             "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
                             "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": str(node),
                             "SLURM_LOCALID": "0", "SLURM_NODEID": str(node)})
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                   "--nproc-per-node", "1", "--node-rank", str(node), "--master-addr",
                   "127.0.0.1", "--master-port", str(port), *program]
        out = open(logs / f"node{node}.log", "w")
        procs.append((subprocess.Popen(cmd, env=node_env, stdout=out, stderr=subprocess.STDOUT),
                      out))
    try:
        codes = [p.wait(timeout=TIMEOUT) for p, _ in procs]
    except subprocess.TimeoutExpired:
        codes = ["timeout"]
    finally:
        for p, out in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
    if codes != [0, 0]:
        tails = "\n".join(f"--- node {n} ---\n" + (logs / f"node{n}.log").read_text()[-2500:]
                          for n in (0, 1))
        pytest.fail(f"two-node job ended with {codes}\n{tails}")


@pytest.fixture(scope="module")
def one_process_cache(fixture_btc, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(teacher, corpus of three 3-second songs, its cache labelled by one process)."""
    root = tmp_path_factory.mktemp("multinode_label")
    teacher = fixture_btc / "checkpoint.pt"
    audio = write_tone_corpus(root / "audio", songs=3, seconds=3.0)
    label_corpus(teacher, audio, root / "one", num_workers=0,
                 trainer_kwargs={"accelerator": "cpu", "devices": 1})
    return teacher, audio, root / "one"


@pytest.mark.slow
def test_two_node_label_cache_equals_the_single_process_cache(one_process_cache, tmp_path):
    teacher, audio, reference = one_process_cache
    two_nodes(["label", "--teacher", str(teacher), "--audio", str(audio),
               "--out", str(tmp_path / "two"), "--num-nodes", "2", "--devices", "1",
               "--strategy", "ddp", "--accelerator", "cpu", "--num-workers", "0"],
              tmp_path / "logs", launcher="recipe")
    # each node wrote the shard of its own rank, and node 0 merged them
    assert len(list((tmp_path / "two").glob("shard-*-r1-*.bin"))) == 1
    report = json.loads((tmp_path / "two" / "label_report.json").read_text())
    assert report["labelled"] == ["tone_000", "tone_001", "tone_002"]
    assert cache_differences(tmp_path / "two", reference) == []


@pytest.mark.slow
def test_two_slurm_tasks_label_the_same_cache_as_one_process(one_process_cache, tmp_path):
    teacher, audio, reference = one_process_cache
    two_nodes(["label", "--teacher", str(teacher), "--audio", str(audio), "--out",
               str(tmp_path / "slurm"), "--num-nodes", "2", "--devices", "1", "--strategy",
               "ddp", "--accelerator", "cpu", "--num-workers", "0"], tmp_path / "logs",
              launcher="slurm")
    # ranks came from the SLURM variables (nothing else told the processes apart)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "logs" / "node1.log").read_text()
    assert len(list((tmp_path / "slurm").glob("shard-*-r1-*.bin"))) == 1
    assert cache_differences(tmp_path / "slurm", reference) == []


def fit_args(corpus: Path, run: Path, *extra: str) -> list[str]:
    return [str(EXPERIMENTS / "baseline.yaml"), f"data.train={corpus}", f"data.valid={corpus}",
            "data.test=null", "model.size=small", "data.batch_size=2", "data.pitch_shift=0",
            "optim.schedule=constant", "checkpoint.patience=0", f"run_dir={run}",
            "logger.kind=csv", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
            "trainer.check_val_every_n_epoch=1", "trainer.strategy=ddp", "trainer.devices=1",
            "trainer.num_nodes=2", *extra]


@pytest.fixture(scope="module")
def two_node_fit(tmp_path_factory) -> Path:
    """One epoch of a two-node fit on three 4-second songs; its probe files in ``probe1``."""
    root = tmp_path_factory.mktemp("multinode_fit")
    corpus = write_tone_corpus(root / "audio", songs=3, seconds=4.0)
    script = root / "fit_with_probe.py"
    script.write_text(FIT_WITH_PROBE)
    two_nodes([str(script), str(root / "probe1"),
               *fit_args(corpus, root / "run", "trainer.max_epochs=1")], root / "logs1")
    return root


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.mark.slow
def test_two_node_fit_logs_identical_validation_metrics_on_both_ranks(two_node_fit):
    probe = two_node_fit / "probe1"
    starts = [read(probe, f"start-rank{r}.json") for r in (0, 1)]
    assert [(s["world_size"], s["node"]) for s in starts] == [(2, 0), (2, 1)]
    r0, r1 = (read(probe, f"val-epoch0-rank{r}.json") for r in (0, 1))
    assert r0 == r1
    assert r0["val/songs"] == 3.0  # 3 songs on 2 ranks: the padded duplicate counted once
    assert {"val/root", "val/majmin", "val/mirex"} <= set(r0)


@pytest.mark.slow
def test_resumed_two_node_fit_continues_where_it_stopped(two_node_fit):
    root = two_node_fit
    first = read(root / "run", "summary.json")
    assert first["global_step"] > 0
    two_nodes([str(root / "fit_with_probe.py"), str(root / "probe2"),
               *fit_args(root / "audio", root / "run", "trainer.max_epochs=2",
                         f"resume={root}/run/checkpoints/last.ckpt")], root / "logs2")
    for rank in (0, 1):  # both ranks restored the step and epoch of the checkpoint
        start = read(root / "probe2", f"start-rank{rank}.json")
        assert (start["epoch"], start["step"]) == (1, first["global_step"])
    assert not list((root / "probe2").glob("val-epoch0-*"))  # epoch 0 was not trained again
    assert read(root / "probe2", "val-epoch1-rank0.json") == read(root / "probe2",
                                                                  "val-epoch1-rank1.json")
    resumed = read(root / "run", "summary.json")
    assert resumed["global_step"] == 2 * first["global_step"] and resumed["epochs"] == 2


def test_sbatch_template_runs_fit_with_slurms_node_and_task_counts(tmp_path):
    from chordkd.training.config import load_config

    # stand-ins for srun and chordkd that record the command the template would run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "chordkd").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGV_OUT": str(tmp_path / "argv"),
           "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "4", "SLURM_CPUS_PER_TASK": "8"}
    done = subprocess.run(["bash", str(CLUSTER / "slurm.sbatch"), "optim.lr=3e-4"], env=env,
                          capture_output=True, text=True, timeout=30,
                          cwd=EXPERIMENTS.parent)
    assert done.returncode == 0, done.stderr
    command, config, *overrides = (tmp_path / "argv").read_text().splitlines()
    assert command == "fit" and overrides[-1] == "optim.lr=3e-4"
    cfg = load_config(EXPERIMENTS.parent / config, overrides)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (3, 4, "ddp")
    assert cfg.data.num_workers == 7


def test_auto_resume_takes_a_newer_slurm_preemption_checkpoint_over_last(tmp_path):
    from chordkd.training.config import load_config
    from chordkd.training.fit import _resume_path

    cfg = load_config(EXPERIMENTS / "baseline.yaml", [f"run_dir={tmp_path}"])
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"end of epoch 3")
    assert _resume_path(cfg, ckpts) == str(ckpts / "last.ckpt")
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # where Lightning saves on SIGUSR1 (default_root_dir)
    hpc.write_bytes(b"mid-epoch 4")
    os.utime(hpc, ns=(ckpts.stat().st_mtime_ns + 10**9,) * 2)
    assert _resume_path(cfg, ckpts) == str(hpc)
    os.utime(ckpts / "last.ckpt", ns=(hpc.stat().st_mtime_ns + 10**9,) * 2)  # epoch 4 finished
    assert _resume_path(cfg, ckpts) == str(ckpts / "last.ckpt")
