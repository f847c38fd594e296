"""Launching numba ``parallel=True`` kernels without letting numba kill the process.

numba aborts the whole process (it cannot raise) when

* its ``workqueue`` threading layer, used where neither TBB nor OpenMP is installed, is entered by two
  Python threads at once ("Concurrent access has been detected"), or
* a ``fork()``ed child of a process that already started GNU OpenMP threads launches a parallel region
  ("Terminating: fork() called from a process already using GNU OpenMP"): ``multiprocessing`` with the
  fork start method, torch ``DataLoader`` workers.

:func:`launch` runs a kernel so that neither can happen: a lock serialises launches under
``workqueue``, and in such a forked child the kernel's serial twin (the same loop compiled without
``parallel``) runs instead. Every parallel kernel a reader or writer calls should go through it.
"""

import os
import threading
import types

import numba

# Elements below which a kernel runs its serial twin: starting a parallel region costs tens of microseconds on
# an idle machine and milliseconds on a loaded one, more than the loop over a few thousand elements itself
# (a tiny tensor's whole encode is ~1-10 us of work per kernel).
SERIAL_BELOW = 1 << 15

_LOCK = threading.Lock()
_LAUNCH_PID = None  # the process that started numba's threading layer


def _reset_after_fork():
    global _LOCK
    _LOCK = threading.Lock()  # a lock held by another thread at fork() would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def launch(kernel, serial, *args, work=None):
    """``kernel(*args)``, or ``serial(*args)`` where numba could not run the parallel one safely or where
    ``work`` (elements the loop touches) is below ``SERIAL_BELOW``."""
    global _LAUNCH_PID
    if work is not None and work < SERIAL_BELOW:
        return serial(*args)
    if numba.get_num_threads() <= 1:  # one thread asked for (the encode pool's threads): no parallel region
        return serial(*args)
    pid = os.getpid()
    if _LAUNCH_PID is None:  # the first launch picks the threading layer: one thread at a time
        with _LOCK:
            if _LAUNCH_PID is None:
                result = kernel(*args)
                _LAUNCH_PID = pid
                return result
    layer = numba.threading_layer()
    if layer == "omp" and pid != _LAUNCH_PID:
        return serial(*args)
    if layer == "workqueue":  # it cannot run regions from two Python threads at once
        with _LOCK:
            return kernel(*args)
    return kernel(*args)


def serial_twin(kernel):
    """The serial twin of a ``@numba.njit(parallel=True)`` kernel (``prange`` runs as ``range``), compiled
    lazily, where :func:`launch` first needs it, and cached on disk like the kernel.

    The twin compiles a copy of the kernel's function named ``<name>_serial``: numba's cache files are named
    after the function's qualified name and its index does not tell parallel from serial builds, so the
    original name would make the two overwrite each other's cache entries."""
    f = kernel.py_func
    twin = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__, f.__closure__)
    twin.__qualname__ = f.__qualname__ + "_serial"
    twin.__module__ = f.__module__
    return numba.njit(nogil=True, cache=True)(twin)  # nogil: tensors are coded on several threads
