"""``make mutants``: put deliberate bugs into a scratch copy, one at a time, and see which tests fail.

A test suite is only as good as the bugs it catches. Each mutant below is a small textual
patch of one file (a name, the file, the exact text it replaces and its replacement) and the
tests that are expected to catch it. For each mutant this script copies the checkout to a
scratch folder, applies the patch, runs those tests against the copy (``PYTHONPATH`` points at
it, so the editable install is not used) and records which tests failed: they *killed* it. A
mutant no test kills is a blind spot of the suite.

Before the mutants, the same tests run on the unpatched copy: they must all pass there, or a
"kill" would mean nothing. Results go to ``mutants/results.{md,json}``; the exit status is 1
if any mutant survives. Not part of CI (it reruns the targeted tests once per mutant).

    python mutants/run.py [--only NAME ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("chordkd", "tests", "experiments", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # the bug, in words
    file: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


MUTANTS = (
    Mutant("resume-returns-no-checkpoint", "a rerun never resumes: it trains from scratch",
           "chordkd/training/fit.py",
           "def _resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:\n",
           "def _resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:\n    return None\n",
           ("tests/test_resume.py",)),
    Mutant("kd-ignores-logz-at-t", "SelectiveKD rebuilds the teacher without its cached logZ at T",
           "chordkd/training/distillation.py",
           'logz_t=batch.get("teacher_logz_t")', "logz_t=None",
           ("tests/test_oracles.py", "tests/test_distillation.py")),
    Mutant("stitching-off-by-one-frame", "window boundaries move one frame later",
           "chordkd/inference.py",
           "centres = st.float() + (w - 1) / 2", "centres = st.float() + (w - 1) / 2 + 1",
           ("tests/test_oracles.py",)),
    Mutant("transposition-off-by-one-semitone", "class transposition moves roots one semitone too far",
           "chordkd/chords.py",
           "moved = ((index // n_q + semitones) % 12)", "moved = ((index // n_q + semitones + 1) % 12)",
           ("tests/test_chords.py", "tests/test_teacher_datamodule.py", "tests/test_teacher_cache.py")),
    Mutant("paper-rule-thresholds-swapped", "the paper rule's 0.1 and 0.9 thresholds swap places",
           "chordkd/training/distillation.py",
           "        falling = 1.0 - 8.0 * (conf - 0.9)  # 1 at c = 0.9 -> 0.2 at c = 1\n"
           "        w = torch.where(conf < 0.1, torch.zeros_like(conf), torch.ones_like(conf))\n"
           "        return torch.where(conf > 0.9, falling, w)",
           "        falling = 1.0 - 8.0 * (conf - 0.9)  # 1 at c = 0.9 -> 0.2 at c = 1\n"
           "        w = torch.where(conf < 0.9, torch.zeros_like(conf), torch.ones_like(conf))\n"
           "        return torch.where(conf > 0.1, falling, w)",
           ("tests/test_distillation.py",)),
    Mutant("audio-cache-ignores-a-changed-file", "the audio cache's key leaves out file fingerprints",
           "chordkd/data/audio_cache.py",
           "    fingerprint = _safe_fingerprint(song.audio)\n", '    fingerprint = "same"\n',
           ("tests/test_audio_cache.py", "tests/test_sharded_audio_cache.py")),
    Mutant("audio-cache-without-its-lock", "concurrent builders no longer wait for each other",
           "chordkd/data/audio_cache.py",
           "with FileLock(folder / LOCK_NAME):", "with contextlib.nullcontext():",
           ("tests/test_audio_cache.py",)),
    Mutant("teacher-cache-fingerprints-unchecked", "a cache of another teacher or audio joins silently",
           "chordkd/data/datamodule.py",
           "        self._check_fingerprints(kept, audio)\n", "",
           ("tests/test_cache_join.py",)),
    Mutant("environment-overrides-logger-mode", "WANDB_MODE wins over an explicit logger.mode",
           "chordkd/training/fit.py",
           'return configured or environ.get("WANDB_MODE") or "offline"',
           'return environ.get("WANDB_MODE") or configured or "offline"',
           ("tests/test_fit_options.py", "-k", "wandb or mode")),
    Mutant("early-stopping-state-not-restored", "a resumed run forgets early stopping's patience",
           "chordkd/training/fit.py",
           "callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.checkpoint.patience))",
           "callbacks.append(_Forgetful(monitor=monitor, mode=mode, patience=cfg.checkpoint.patience))",
           ("tests/test_resume.py", "-k", "early_stopping")),
)
# The early-stopping mutant needs a class that drops the state it is given.
_FORGETFUL = '''

from lightning.pytorch.callbacks import EarlyStopping as _EarlyStopping  # noqa: E402


class _Forgetful(_EarlyStopping):
    def load_state_dict(self, state_dict):
        pass
'''


def scratch_copy(root: Path) -> Path:
    """The checkout's code, tests and experiments under ``root/repo``, with ``root/shared``
    pointing at the shared fixtures (the tests look for them beside the checkout)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared.resolve())
    return repo


def apply(repo: Path, m: Mutant) -> None:
    path = repo / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: the text to replace occurs {text.count(m.old)} "
                         f"times in {m.file} (the code changed: update mutants/run.py)")
    text = text.replace(m.old, m.new)
    if "_Forgetful(" in m.new:
        text += _FORGETFUL
    path.write_text(text)


def run_tests(repo: Path, args: tuple[str, ...], timeout: float) -> tuple[list[str], int, float]:
    """Run pytest on the copy: (failed test ids, number of tests run, seconds)."""
    report = repo / "junit.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
           f"--junitxml={report}", *args]
    try:
        subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ["(timed out)"], 0, time.monotonic() - start
    seconds = time.monotonic() - start
    if not report.is_file():
        return ["(pytest did not run)"], 0, seconds
    failed, total = [], 0
    for case in ET.parse(report).getroot().iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            failed.append(f"{module}.py::{case.get('name')}")
    return failed, total, seconds


def check_isolation(repo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    where = subprocess.run([sys.executable, "-c", "import chordkd; print(chordkd.__file__)"],
                           env=env, cwd=repo, capture_output=True, text=True, check=True,
                           timeout=120)
    if not Path(where.stdout.strip()).resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"the scratch copy is not the chordkd imported: {where.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", metavar="NAME", help="run only these mutants")
    p.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="chordkd-mutants-") as tmp:
        clean = scratch_copy(Path(tmp) / "clean")
        check_isolation(clean)
        for test_args in sorted({m.tests for m in chosen}):
            failed, total, seconds = run_tests(clean, test_args, args.timeout)
            print(f"baseline {' '.join(test_args)}: {total} tests, {len(failed)} failed "
                  f"({seconds:.0f} s)", flush=True)
            if failed or total == 0:
                raise SystemExit(f"the unmutated copy fails {failed or 'to run'}: fix that first")
        for i, m in enumerate(chosen):
            repo = scratch_copy(Path(tmp) / f"m{i}")
            apply(repo, m)
            failed, total, seconds = run_tests(repo, m.tests, args.timeout)
            rows.append({"mutant": m.name, "bug": m.what, "file": m.file,
                         "tests": " ".join(m.tests), "killed_by": failed, "tests_run": total,
                         "seconds": round(seconds, 1), "killed": bool(failed)})
            print(f"{m.name}: {'killed by ' + str(len(failed)) if failed else 'SURVIVED'} "
                  f"({seconds:.0f} s)", flush=True)
            shutil.rmtree(repo)
    write_results(rows)
    survivors = [r["mutant"] for r in rows if not r["killed"]]
    print(f"{len(rows) - len(survivors)} of {len(rows)} mutants killed"
          + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


def write_results(rows: list[dict]) -> None:
    sys.path.insert(0, str(REPO))
    from chordkd.atomic import write_json, write_text

    lines = ["| mutant | bug | killed | tests that killed it |", "|:---|:---|:---:|:---|"]
    for r in rows:
        names = "<br>".join(f"`{t.split('/')[-1]}`" for t in r["killed_by"]) or "**none**"
        lines.append(f"| `{r['mutant']}` | {r['bug']} ({r['file']}) | "
                     f"{'yes' if r['killed'] else '**NO**'} | {names} |")
    out = REPO / "mutants"
    write_text(out / "results.md", "\n".join(lines) + "\n")
    write_json(out / "results.json", rows)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
