"""The CLI asks OpenMP to sleep at barriers, before torch loads, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# `chordkd --help` builds the parser and exits; then report what the process holds
PROBE = (
    "import os, sys\n"
    "from chordkd.cli import main\n"
    "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
)


def _probe(policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                         check=True)
    return out.stdout.strip().splitlines()[-1].split()  # the last line; --help printed above


def test_the_cli_sets_a_passive_wait_policy_before_torch_is_imported():
    policy, torch_loaded = _probe(None)
    assert policy == "PASSIVE"
    assert torch_loaded == "False"  # nothing imported torch before the variable was set


@pytest.mark.parametrize("users", ["ACTIVE", "passive"])
def test_a_users_wait_policy_is_kept(users: str):
    assert _probe(users)[0] == users
