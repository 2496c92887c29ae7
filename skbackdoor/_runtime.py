"""The one place that configures TensorFlow's process-wide settings.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it is first imported, so the
default has to be set before any ``import keras``: every skbackdoor module that imports
Keras imports this module first, which sets it through :mod:`skbackdoor._log_level`
(the command line sets its quieter level there before importing this module). A
value the user exported is left alone. This module then imports TensorFlow itself,
without the lines its runtime prints at start-up whatever the level
(:mod:`skbackdoor._stderr`), unless the level was set before (by the user: then
they asked for TensorFlow's own output; or by the command line, which silences the
import itself).

TensorFlow's thread pools are sized once too, before its first operation: in a joblib
(loky) or Dask worker this module sizes them to the worker's share of the cores (see
:func:`configure_tensorflow_threads`; ``SKBACKDOOR_TF_THREADS`` overrides it).
"""

import os
import sys
import warnings

from ._log_level import LIBRARY_LOG_LEVEL, LOG_LEVEL_VARIABLE, default_tensorflow_log_level
from ._stderr import CapturedStandardError, without_start_up_lines

_LEVEL_SET_BEFORE = LOG_LEVEL_VARIABLE in os.environ
default_tensorflow_log_level(LIBRARY_LOG_LEVEL)


def _import_tensorflow():
    """Import TensorFlow and Keras; unless a log level was set before this module's, drop
    the lines TensorFlow's runtime prints at start-up whatever the level (anything else it
    writes on stderr meanwhile is passed on)."""
    if "tensorflow" in sys.modules or _LEVEL_SET_BEFORE:
        import keras  # noqa: F401
        return
    with CapturedStandardError(passed_on=without_start_up_lines):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


_import_tensorflow()


# ------------------------------------------------------------------ thread sizing

THREADS_VARIABLE = "SKBACKDOOR_TF_THREADS"


def worker_thread_budget():
    """The number of threads TensorFlow should use in this process, or None.

    In order: ``SKBACKDOOR_TF_THREADS`` (a positive integer; ``0`` or ``default`` keeps
    TensorFlow's own sizing); None when ``TF_NUM_INTRAOP_THREADS`` or
    ``TF_NUM_INTEROP_THREADS`` is set (TensorFlow reads those itself); the threads of
    the Dask worker running in this process; ``OMP_NUM_THREADS``, which joblib's loky
    backend sets in each worker to its share of the cores (``cpu_count() // n_jobs``)
    and Dask's nanny to 1; otherwise None: TensorFlow sizes its pools to every core.
    """
    explicit = os.environ.get(THREADS_VARIABLE, "").strip().lower()
    if explicit:
        if explicit in ("0", "default"):
            return None
        try:
            value = int(explicit)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(
                f"{THREADS_VARIABLE}={os.environ[THREADS_VARIABLE]!r}: expected a positive "
                "number of threads, or 0 / 'default' for TensorFlow's own sizing."
            )
        return value
    if "TF_NUM_INTRAOP_THREADS" in os.environ or "TF_NUM_INTEROP_THREADS" in os.environ:
        return None
    dask_threads = _dask_worker_threads()
    if dask_threads:
        return dask_threads
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return omp if omp >= 1 else None


def _dask_worker_threads():
    """Threads of the one Dask worker living in this process, if there is one."""
    worker_module = sys.modules.get("distributed.worker")
    if worker_module is None:
        return None
    workers = list(getattr(worker_module.Worker, "_instances", ()))
    if len(workers) != 1:
        return None
    state = getattr(workers[0], "state", workers[0])
    threads = getattr(state, "nthreads", None)
    return threads if isinstance(threads, int) and threads >= 1 else None


def configure_tensorflow_threads(n_threads=None):
    """Size TensorFlow's intra-op and inter-op thread pools to ``n_threads``.

    Called once when skbackdoor is imported, with :func:`worker_thread_budget`'s answer,
    so that each joblib (loky) or Dask worker uses its share of the cores rather than
    all of them: two workers on two cores then run side by side instead of fighting over
    both. Both pools get ``n_threads``, the shape of TensorFlow's default (every core for
    each) scaled to the share. Pools can only be sized before TensorFlow runs its first
    operation; later calls warn and change nothing.

    Parameters
    ----------
    n_threads : int, default=None
        Threads per pool; None uses :func:`worker_thread_budget` and does nothing (and
        imports nothing) when that is None.

    Returns
    -------
    n_threads : int or None
        The size applied, or None when TensorFlow keeps its own sizing.
    """
    if n_threads is None:
        n_threads = worker_thread_budget()
        if n_threads is None:
            return None
    import tensorflow as tf

    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) == (
        n_threads,
        n_threads,
    ):
        return n_threads
    try:
        threading.set_intra_op_parallelism_threads(n_threads)
        threading.set_inter_op_parallelism_threads(n_threads)
    except RuntimeError:  # TensorFlow has already run an operation in this process
        warnings.warn(
            f"TensorFlow's thread pools are already running, so they keep their size instead "
            f"of {n_threads} thread(s). Import skbackdoor before running any TensorFlow "
            f"operation, or set {THREADS_VARIABLE}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return n_threads


def tensorflow_threads():
    """``(intra_op, inter_op)`` pool sizes TensorFlow is configured with (0: its default)."""
    import tensorflow as tf

    return (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


configure_tensorflow_threads()
