"""OpenMP's wait policy for chordkd's processes: sleep at barriers instead of spinning.

torch runs its CPU operators on an OpenMP thread pool. Between parallel regions, idle pool
threads spin (libgomp's default) before they sleep. On a machine with as many busy threads
as cores, spinning takes the CPU from the thread the barrier is waiting for, and a BTC-base
training step on 2 threads took 7x longer than with ``OMP_WAIT_POLICY=PASSIVE`` on a shared
2-core machine (``make bench``, section 6). The policy decides only how threads wait: the
work and its partition are unchanged, and so are the results, bit for bit (the bench
checks). The runtime reads the variable when it loads, so it must be set before ``torch``
is imported: the CLI does it first thing; a user's own value always wins.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

VARIABLE = "OMP_WAIT_POLICY"
DEFAULT = "PASSIVE"


def prefer_passive_wait() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already; returns the value in force.

    Child processes (DataLoader workers, DDP ranks, subprocesses) inherit it. When ``torch``
    is already imported (``main`` called from Python), this process keeps OpenMP's default
    and only its children get the new one (logged at debug level).
    """
    if VARIABLE in os.environ:
        return os.environ[VARIABLE]
    if "torch" in sys.modules:
        log.debug("%s set after torch was imported: only child processes get it", VARIABLE)
    os.environ[VARIABLE] = DEFAULT
    return DEFAULT
