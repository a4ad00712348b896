"""Services a test worker starts die with it, even when the worker is SIGKILLed (tests/support/reaper.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent

WORKER = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
from support import services
pg, redis = services.shared_postgres(), services.shared_redis()
print(pg.proc.popen.pid, redis.proc.popen.pid, flush=True)
time.sleep(600)
"""


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    members.append(int(entry.name))
            except ProcessLookupError:
                pass
    return members


def test_postgres_and_redis_die_with_a_sigkilled_worker():
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        groups = [int(pid) for pid in worker.stdout.readline().split()]
        assert len(groups) == 2, "the worker did not start PostgreSQL and Redis"
        assert all(group_members(g) for g in groups), "both services run before the kill"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 20
        while any(group_members(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {g: group_members(g) for g in groups}
        assert not any(left.values()), f"processes left after the worker was killed: {left}"
    finally:
        worker.kill()
