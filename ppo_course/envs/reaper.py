"""Kills a process's ViZDoom engines after that process dies without closing them.

Each ViZDoom game runs its engine as a child process that talks to Python through shared memory
(``/dev/shm/ViZDoom*``). If the Python process is killed outright (``kill -9``, the out-of-memory
killer, a notebook kernel that is restarted), nothing closes the games: the engines are adopted by
PID 1 and keep running, each holding its shared memory. :func:`ppo_course.envs.doom.start_game`
therefore starts this script once per process (run by path, so it imports nothing of the package)
and writes one ``PID INSTANCE_ID`` line to its standard input per engine. The script reads until
end of file, which comes when the watched process has exited, however it exited; then it sends
SIGKILL to each engine that is still running (recognised by its ``+viz_instance_id``, so that a
reused PID is never touched) and removes that engine's shared-memory files.
"""

from __future__ import annotations

import glob
import os
import signal
import sys


def engine_is_running(pid: int, instance_id: str) -> bool:
    """True if ``pid`` is still the ViZDoom engine started with ``+viz_instance_id instance_id``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return b"+viz_instance_id" in args and instance_id.encode() in args


def reap(engines: list[tuple[int, str]]) -> None:
    """Kill the engines that are still running and remove every engine's shared-memory files."""
    for pid, instance_id in engines:
        if engine_is_running(pid, instance_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in glob.glob(f"/dev/shm/ViZDoom*{instance_id}"):
            try:
                os.remove(path)
            except OSError:
                pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the trainer must not stop the watch
    engines = []
    for line in sys.stdin:
        pid, instance_id = line.split()
        engines.append((int(pid), instance_id))
    reap(engines)


if __name__ == "__main__":
    main()
