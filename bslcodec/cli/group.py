"""The ``bslcodec`` click group: one-line errors and exit codes, the signals that unwind, and the helpers and
options the commands share."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading

import click

from .. import __version__
from ..container.errors import BslError
from ..files import atomic as _atomic

META = "bslcodec."


# ---------------------------------------------------------------- error handling

class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so staged outputs are removed."""


# Python code that native code calls back into: an exception raised there is "ignored" by ctypes and leaves
# the native side half done. Numba loads each kernel from its cache through llvmlite's object-cache callback;
# a KeyboardInterrupt raised inside it left LLVM broken, and the process died at exit with "double free" or
# SIGSEGV (tests/test_hostile_writers.py's signal test, ~1 run in 30-100; both stacks seen on record).
_NATIVE_CALLERS = ("llvmlite", "numba")
RETRY_S = 0.05  # a deferred signal is sent again after this long


def _in_native_callback(frame) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_NATIVE_CALLERS):
            return True
        frame = frame.f_back
    return False


def _deferred(signum, frame) -> bool:
    """True when the signal arrived inside numba/llvmlite: it is sent again shortly (by a timer thread) instead
    of raising there, until it lands where an exception unwinds cleanly."""
    if not _in_native_callback(frame):
        return False
    t = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
    t.daemon = True
    t.start()
    return True


def _raise_terminated(signum, frame):
    _atomic.note_signal(signum)
    if not _deferred(signum, frame):
        raise _Terminated(signum)


def _raise_interrupt(signum, frame):
    _atomic.note_signal(signum)  # if CPython swallows the exception below, no output is put in place all the same
    if not _deferred(signum, frame):
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_unwind():
    """SIGTERM/SIGHUP raise _Terminated (their default action kills the process on the spot, leaving the
    staged output behind), SIGINT KeyboardInterrupt (where it is not ignored); each is noted first
    (``files.atomic.note_signal``), so an exception CPython swallows still stops the output from being put
    in place. The previous handlers come back afterwards. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if the parent ignored it (nohup, &)
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Cli(click.Group):
    """A click group whose every error is one line on stderr and a non-zero exit (no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _atomic.clear_signals()
        try:
            with _signals_unwind():
                rv = super().main(args, prog_name or "bslcodec", complete_var, standalone_mode=False, **extra)
            if _atomic.signalled() is not None:  # its exception was swallowed on the way (see _signals_unwind)
                raise KeyboardInterrupt
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sig = _atomic.signalled()
            if sig is not None and sig != signal.SIGINT:
                _fail("terminated", 128 + sig)
            _fail("interrupted", 130)
        except _Terminated as exc:
            _fail("terminated", 128 + int(exc.args[0]))
        except BslError as exc:
            _fail(str(exc), 1)
        except MemoryError:
            _fail("out of memory", 1)
        except OSError as exc:  # disk full, permission denied, ...
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}", 1)
        finally:
            _atomic.clear_signals()
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int):
    message = " ".join(str(message).split("\n")[0].split()) or "failed"
    click.echo(f"bslcodec: error: {message}", err=True)
    sys.exit(code)


def _set_workers(workers):
    """``--workers N``: threads (the encoder's tensor threads and the Numba threads of the codec's kernels,
    which run groups of weights in parallel); the default: every core Numba found (encode: the cores this
    process may use less those the machine's load keeps busy)."""
    if workers is None:
        return
    import numba

    from ..files import pool

    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= workers <= top:
        raise click.BadParameter(f"must be between 1 and {top} (the cores Numba found)", param_hint="--workers")
    numba.set_num_threads(workers)
    pool.set_threads(workers)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _g(x, digits=4) -> str:
    """A number for a table; "?" for what a (hostile) file put where a number belongs."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "?"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    try:
        return f"{x:.{digits}g}"
    except OverflowError:  # a JSON integer beyond binary64
        return "?"


def _table(rows: list, header: list, right: set) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


workers_option = click.option("--workers", type=int, metavar="N",
                              help="Threads (encode: tensors coded side by side; the codec's Numba kernels). Default: every "
                                   "core (encode: those the machine's load leaves idle).")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="bslcodec")
def main():
    """Small neural-network checkpoints (.bsl): encode, decode, inspect and verify them."""
