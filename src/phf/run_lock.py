"""One writer per run folder (or output file): a lock held for a command's life.

    with hold(run_dir, "phf train"):
        ...   # a second `phf train` into run_dir gets RunInUse: "RUN is in use by pid N since T"

The lock is the file `RUN/.phf.lock` (for a file output such as a scored corpus:
`<file>.lock`) holding who took it ({"pid", "host", "since", "command"}), with an
exclusive `flock` on it while held. The OS drops the flock when the holder ends,
however it ends (kill -9 included), so on one machine a dead holder is detected
without trusting pids, which get reused. Where flock does not reach across machines
(some network filesystems), the record decides: a holder on another host is taken as
alive until its record has not been refreshed for `STALE_AFTER` seconds (the holder
touches it every `HEARTBEAT` seconds). Taking over a stale lock is logged with the
reason. A release deletes the file while still holding the flock; a waiter that then
gets the flock on the deleted file sees that the path now names another file (or
none) and starts over, so two processes can never both believe they hold it.

Locks are re-entrant within a process (`phf train --eval` trains, then evaluates the
same folder), and only stdlib is used: this module sits at the bottom layer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from phf.errors import DataError

log = logging.getLogger(__name__)

LOCK_NAME = ".phf.lock"
#: seconds between refreshes of a held lock's file time
HEARTBEAT = 30.0
#: a lock of another host not refreshed for this long is stale (its holder or host died)
STALE_AFTER = 600.0


class RunInUse(DataError):
    """Another live process holds the lock of the folder or file."""


def lock_path(target: str | Path) -> Path:
    """`DIR/.phf.lock` for a folder (existing, or to be made: a name without a suffix),
    `<file>.lock` for a file output."""
    target = Path(target)
    if target.is_dir() or (not target.exists() and not target.suffix):
        return target / LOCK_NAME
    return target.with_name(target.name + ".lock")


class _Held:
    def __init__(self, path: Path, fd: int, made_dir: bool):
        self.path, self.fd, self.count, self.made_dir = path, fd, 1, made_dir
        self.stop = threading.Event()
        self.beat = threading.Thread(target=self._heartbeat, name=f"lock {path}", daemon=True)
        self.beat.start()

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                os.utime(self.fd)
            except OSError:
                pass

    def release(self) -> None:
        self.stop.set()
        try:
            if _same_file(self.path, self.fd):
                self.path.unlink()  # while the flock is held: see the module docstring
            if self.made_dir:  # a command that stopped before writing leaves no empty run folder
                self.path.parent.rmdir()
        except OSError:
            pass
        os.close(self.fd)


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _record(fd: int) -> dict:
    """The holder's record in the lock file ({} when empty or unreadable: a holder that
    died between creating and writing it)."""
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data) if data.strip() else {}
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _flock(fd: int) -> bool | None:
    """Try to take the flock: True, False (someone holds it), None (not supported here)."""
    import errno
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ENOSYS: the record alone decides


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # another user's process, or a record we cannot read: assume alive
    return True


def _since(record: dict) -> str:
    return record.get("since") or "an unknown time"


def _in_use(what: Path, record: dict) -> RunInUse:
    host = record.get("host")
    where = "" if host in (None, socket.gethostname()) else f" on host {host}"
    command = f" ({record['command']})" if record.get("command") else ""
    return RunInUse(f"{what} is in use by pid {record.get('pid', '?')}{where} since {_since(record)}{command}; "
                    "wait for it to finish, or write elsewhere", "in use")


def _stale_reason(record: dict, got_flock: bool | None, age: float, stale_after: float) -> str | None:
    """Why the holder named in the lock file is gone (the lock is stale), or None when it
    may be alive. Called when this process could take the flock, or flock is unsupported."""
    if record.get("host") == socket.gethostname():
        if got_flock or not _pid_alive(record.get("pid")):  # the OS dropped its flock: it ended
            return f"pid {record.get('pid')} on this host has ended"
        return None
    if age > stale_after:  # another host: its flock may not reach here; trust a refreshed record
        return (f"pid {record.get('pid')} on host {record.get('host')} has not refreshed it for "
                f"{age:.0f} s (more than {stale_after:.0f} s)")
    return None


def _key(path: Path) -> Path:
    return path.parent.resolve() / path.name


class Lock:
    """A taken lock; `release()` (or `close()`) gives it back."""

    def __init__(self, path: Path):
        self.path = path

    def release(self) -> None:
        release(self.path)

    close = release


def acquire(target: str | Path, command: str = "", stale_after: float | None = None,
            at: str | Path | None = None) -> Lock:
    """Take the lock of `target` (a run folder, or an output file) for this process, or
    raise RunInUse naming its holder. `at`: the lock file (default `lock_path(target)`)."""
    stale_after = STALE_AFTER if stale_after is None else stale_after
    target = Path(target)
    path = Path(at) if at is not None else lock_path(target)
    made_dir = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key(path)
    with _guard:
        if key in _held:
            _held[key].count += 1
            return Lock(path)
        for _ in range(100):  # a turn is lost to a release or a holder still writing its record
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            got = _flock(fd)
            record = _record(fd)
            if got is False:  # a live process on a filesystem where flock works
                os.close(fd)
                if not record:  # it is writing its record right now
                    time.sleep(0.05)
                    continue
                raise _in_use(target, record)
            if not _same_file(path, fd):
                os.close(fd)  # released (deleted) between our open and our flock: start over
                continue
            if record:
                reason = _stale_reason(record, got, time.time() - os.fstat(fd).st_mtime, stale_after)
                if reason is None:
                    os.close(fd)
                    raise _in_use(target, record)
                log.warning("%s: taking over a stale lock: %s (it was taken %s)", target, reason, _since(record))
            mine = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "command": command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode(), 0)
            os.fsync(fd)
            _held[key] = _Held(path, fd, made_dir)
            return Lock(path)
        raise RunInUse(f"{target}: could not take its lock {path}; try again", "in use")


def release(path: Path) -> None:
    """Give back the lock file `path` taken with `acquire` (the last of re-entrant takes
    deletes it)."""
    key = _key(Path(path))
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count == 0:
            del _held[key]
            held.release()


@contextmanager
def hold(target: str | Path, command: str = "", stale_after: float | None = None, at: str | Path | None = None):
    """The lock of `target` for the body: `with hold(run_dir, "phf eval"): ...`."""
    lock = acquire(target, command, stale_after, at)
    try:
        yield lock
    finally:
        lock.release()
