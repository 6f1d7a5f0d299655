"""Run a function in a forked child: a crash (SIGSEGV, SIGBUS, SIGKILL) kills the child,
not the test session, and shows up as a negative exit status."""
from __future__ import annotations

import os
import pickle
import sys


def run_forked(fn, *args, env: dict | None = None):
    """(status, value): status 0 and fn's return value; 1 and the exception (pickled
    where possible, else its text); or -SIGNAL when the child died of a signal."""
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
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, wait = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait)
    return code, (pickle.loads(data) if data else None)
