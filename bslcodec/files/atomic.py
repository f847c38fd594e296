"""Atomic writes: a temporary file beside the output, fsync, rename; and the clean-up of the temporary
files and folders that a killed writer left behind."""

import os
import stat
import tempfile

from ..container.errors import BslError

_TMP_SUFFIX = ".bsl-tmp"
_signalled = None  # the first signal the CLI's handlers noted (note_signal), or None


def note_signal(signum: int) -> None:
    """Record that an interrupting signal arrived (the CLI's SIGINT/SIGTERM/SIGHUP handlers call this before
    raising). From then on :func:`check_signals` refuses to put an output in place: CPython can swallow the
    KeyboardInterrupt a handler raises (raised inside an import's weakref callback, it is printed as
    "Exception ignored" and the run goes on), and an interrupted run must not finish writing all the same.
    No lock: handlers run on the main thread between bytecodes, where a lock held by the code they
    interrupt would never be released; one assignment is atomic under the GIL."""
    global _signalled
    if _signalled is None:
        _signalled = int(signum)


def clear_signals() -> None:
    global _signalled
    _signalled = None


def signalled():
    """The first signal noted since :func:`clear_signals`, or None."""
    return _signalled


def check_signals() -> None:
    """Raise KeyboardInterrupt if an interrupting signal was noted (called just before each rename into place)."""
    if _signalled is not None:
        raise KeyboardInterrupt


_STALE_AFTER_S = 600  # a temp file whose writer we cannot prove dead is left alone this long


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_OLD_SUFFIX = ".bsl-old"  # a folder output being replaced (--overwrite) is moved into one of these first


def lock_temp(fd: int) -> None:
    """Mark a temp file or folder (its open ``fd``) as live for :func:`remove_stale_temps`: LOCK_EX held
    until ``fd`` is closed."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass


def remove_stale_temps(path) -> list:
    """Delete temp files and folders that an interrupted write to ``path`` left behind (a process killed
    by SIGKILL or a power loss cannot clean up after itself): ``.<name>.<pid>-<random>.bsl-tmp`` of
    :func:`atomic_write` and the CLI's staged outputs, and ``.bsl-old`` folders of an interrupted
    ``--overwrite`` (whose old output is put back where no new one arrived). One is deleted only when no
    writer holds its lock and its writer process is gone (or it is older than ``_STALE_AFTER_S``).
    Returns the deleted paths."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): leave them; they are named .<file>.<pid>-<random>.bsl-tmp
        return []
    import shutil
    import time

    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    prefix = f".{base}."
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith((_TMP_SUFFIX, _OLD_SUFFIX))
                 and "." not in n[len(prefix):-len(_TMP_SUFFIX)]]  # not ".out.bsl.<pid>-..." for "out"
    except OSError:
        return removed
    for name in names:
        tmp = os.path.join(folder, name)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live writer holds LOCK_EX while it writes
        except OSError:
            os.close(fd)
            continue
        try:
            pid = name[len(prefix):-len(_TMP_SUFFIX)].split("-")[0]
            st = os.fstat(fd)
            if not ((pid.isdigit() and not _pid_alive(int(pid))) or time.time() - st.st_mtime > _STALE_AFTER_S):
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(tmp)
            else:
                old = os.path.join(tmp, "x")
                if name.endswith(_OLD_SUFFIX) and os.path.lexists(old) and not os.path.lexists(path):
                    os.rename(old, path)  # killed between moving the old output aside and the new one in
                shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the lock
    return removed


def atomic_write(path, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``; fsync and rename it into place, or remove it.

    The temp file (``.<name>.<pid>-<random>.bsl-tmp``, same folder, so the rename is atomic) is locked
    while it is written; a later write to the same path deletes the temp files of writers that were
    killed (see :func:`remove_stale_temps`). Readers see the old file or the complete new one, never a
    part; after a crash or power loss, the new file is either complete (fsync before rename, then fsync
    of the folder) or absent.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-", suffix=_TMP_SUFFIX,
                                   dir=folder)
    except OSError as exc:  # a missing folder, no permission, a file where the folder should be
        raise BslError(f"{path}: cannot write into {folder}: {exc.strerror}") from None
    try:
        lock_temp(fd)  # marks the temp file live for remove_stale_temps
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a saved model gets the usual file mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        check_signals()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
