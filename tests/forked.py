"""Run a function in a forked child: a crash (SIGSEGV, SIGBUS, SIGKILL) kills the child,
not the test session, and shows up as a negative exit status."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import time


def run_forked(fn, *args, env: dict | None = None, timeout: float = 120.0):
    """(status, value): status 0 and fn's return value; 1 and the exception (pickled
    where possible, else its text); or -SIGNAL when the child died of a signal (-9 also
    when it ran past ``timeout`` seconds)."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child
        status = 0
        try:
            os.close(r)
            for k, v in (env or {}).items():
                os.environ[k] = v
            try:
                value = fn(*args)
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                status, value = 1, err
            try:
                data = pickle.dumps(value)
            except Exception:  # noqa: BLE001
                data = pickle.dumps(f"{type(value).__name__}: {value}")
            with os.fdopen(w, "wb") as fh:
                fh.write(data)
        finally:
            os._exit(status)
    os.close(w)
    import select
    deadline = time.monotonic() + timeout
    chunks = []
    with os.fdopen(r, "rb", buffering=0) as fh:
        while True:
            left = deadline - time.monotonic()
            ready = select.select([fh], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:                      # ran too long: kill it
                os.kill(pid, signal.SIGKILL)
                break
            chunk = fh.read(1 << 16)
            if not chunk:                      # EOF: the child has exited
                break
            chunks.append(chunk)
    _, wait = os.waitpid(pid, 0)
    data = b"".join(chunks)
    code = os.waitstatus_to_exitcode(wait)
    try:
        return code, (pickle.loads(data) if data and code in (0, 1) else None)
    except Exception:  # noqa: BLE001 - a torn message from a killed child
        return code, None
