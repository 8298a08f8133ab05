"""What a process killed without warning (SIGKILL, the OOM killer, a power cut) leaves behind: the store snapshot's
temporary copy beside the store (`proxy.admin_store`) and the workers' socket directory (`proxy.supervisor`).

Nothing runs at such a death, so each of them is named with the id of the process that made it
(`<prefix><pid>-<random>`) and removed by the next process that makes one, once that pid is gone. A pid of a live
process, the caller's own included, is never touched: its owner may still be using it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("strangler.leftovers")


def pid_prefix(prefix: str) -> str:
    """`prefix` with this process's id: the name start of something `remove_dead` may tidy up later."""
    return f"{prefix}{os.getpid()}-"


def remove_dead(directory: Path, prefix: str, what: str) -> list[Path]:
    """Delete the files or directories in `directory` named `<prefix><pid>-...` whose process is gone and that
    belong to this user; returns them. `what` names them in the log line."""
    removed: list[Path] = []
    with contextlib.suppress(OSError):  # no such directory, or not readable: nothing to tidy
        for path in directory.glob(f"{prefix}*"):
            pid = path.name.removeprefix(prefix).split("-", 1)[0]
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            try:
                if path.lstat().st_uid != os.getuid():
                    continue  # another user's: not ours to delete
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue  # tidied by another process meanwhile
            except OSError as exc:
                log.warning("cannot remove %s (%s left by process %s, which is gone): %s", path, what, pid, exc)
                continue
            removed.append(path)
            log.warning("removed %s: %s left by process %s, which is gone", path, what, pid)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts: signalling it is refused, not absent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
