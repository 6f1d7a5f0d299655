"""A real, tiny (or read-only) file system for a command: a tmpfs mounted in a private
mount namespace (as root: ``unshare -m``; otherwise in a user namespace: ``unshare -r
-m``).  Where neither works (no unshare, namespaces disabled), ``mounted`` returns None
and the callers' monkeypatched tests still cover the code paths."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.lru_cache(maxsize=None)
def _unshare() -> tuple[str, ...] | None:
    tool = shutil.which("unshare")
    if tool is None:
        return None
    for prefix in ((tool, "-m", "--propagation", "private"), (tool, "-r", "-m")):
        if prefix[1] == "-m" and os.geteuid() != 0:
            continue
        probe = [*prefix, "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs -o size=64k t "$d" '
                 '&& umount "$d"; r=$?; rmdir "$d"; exit $r']
        try:
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def mounted(path, script: str, *, size: str = "1m", readonly: bool = False) -> list[str] | None:
    """argv running the shell ``script`` with a fresh tmpfs (mode 0700) at ``path``
    (which must exist), or None where this machine cannot mount one."""
    prefix = _unshare()
    if prefix is None:
        return None
    opts = f"size={size},mode=0700" + (",ro" if readonly else "")
    return [*prefix, "sh", "-c", f'mount -t tmpfs -o {opts} infinet-test "$0" && {script}',
            os.fspath(path)]
