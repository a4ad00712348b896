"""Services that a test worker starts die with it, even when the worker is SIGKILLed.

`reap_with_parent(popen)` starts a small watcher process for a child that runs in its own process
group (`start_new_session=True`). The watcher blocks reading a pipe whose only writer is this (the
parent) process. The kernel closes that pipe however the parent ends (exit, crash, SIGKILL), the read
returns, and the watcher ends the child's whole process group: `stop_signal` first, SIGKILL after
`grace_s`. A parent-death signal (prctl PR_SET_PDEATHSIG) would not do: it fires when the thread
that forked exits, and it reaches only the direct child, not what the child starts (runuser ->
postgres, the Dagster daemon -> its code server).

    python tests/support/reaper.py PGID STOP_SIGNAL GRACE_S     (stdin: the pipe; the parent never writes)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

_watchers: list[subprocess.Popen] = []  # kept referenced: the pipe must stay open while the parent lives


def reap_with_parent(
    popen: subprocess.Popen, stop_signal: int = signal.SIGTERM, grace_s: float = 5.0
) -> subprocess.Popen:
    """Watch `popen`'s process group (its pid: it must have been started in a new session)."""
    watcher = subprocess.Popen(
        [sys.executable, __file__, str(popen.pid), str(int(stop_signal)), str(grace_s)],
        stdin=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    _watchers.append(watcher)
    return watcher


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (postgres under runuser)
        return True


def _reap(pgid: int, stop_signal: int, grace_s: float) -> None:
    for sig in (stop_signal, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        if not _group_alive(pgid):
            return


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the terminal reaches the parent, not us
    pgid, stop, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    sys.stdin.buffer.read()  # returns at EOF: the parent has ended, or stopped the service itself
    _reap(pgid, stop, grace)
