"""TensorFlow's thread pools sized to a worker's share of the cores (skbackdoor._runtime)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from joblib import Parallel, cpu_count, delayed

from skbackdoor import _runtime

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("SKBACKDOOR_TF_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def test_loky_workers_get_their_share_of_the_cores():
    # loky gives each worker OMP_NUM_THREADS = cpu_count() // n_jobs (or the parent's value);
    # skbackdoor, imported when the worker unpickles the task, sizes TensorFlow to it.
    if any(name in os.environ for name in THREAD_VARIABLES[:3]):
        pytest.skip("an explicit thread variable is set in this environment")
    expected = int(os.environ.get("OMP_NUM_THREADS", max(cpu_count() // 2, 1)))
    reports = Parallel(n_jobs=2, backend="loky")(delayed(_runtime.tensorflow_threads)() for _ in range(4))
    assert reports == [(expected, expected)] * 4


def _threads_in_a_fresh_process(**variables):
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    env.update(variables, PYTHONPATH=str(ROOT))
    code = "import skbackdoor._runtime as r; print(*r.tensorflow_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return tuple(int(word) for word in out.stdout.split()[-2:])


def test_sizing_is_applied_at_import():
    assert _threads_in_a_fresh_process(OMP_NUM_THREADS="1") == (1, 1)
    assert _threads_in_a_fresh_process(OMP_NUM_THREADS="1", SKBACKDOOR_TF_THREADS="3") == (3, 3)


def test_budget_from_the_environment(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert _runtime.worker_thread_budget() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _runtime.worker_thread_budget() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert _runtime.worker_thread_budget() is None
    monkeypatch.setenv("SKBACKDOOR_TF_THREADS", "4")
    assert _runtime.worker_thread_budget() == 4
    monkeypatch.setenv("SKBACKDOOR_TF_THREADS", "default")
    assert _runtime.worker_thread_budget() is None
    monkeypatch.setenv("SKBACKDOOR_TF_THREADS", "0")
    assert _runtime.worker_thread_budget() is None
    monkeypatch.delenv("SKBACKDOOR_TF_THREADS")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # TensorFlow reads its own variables
    assert _runtime.worker_thread_budget() is None
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    for bad in ("-1", "two"):
        monkeypatch.setenv("SKBACKDOOR_TF_THREADS", bad)
        with pytest.raises(ValueError, match=f"SKBACKDOOR_TF_THREADS='{bad}': expected a positive number"):
            _runtime.worker_thread_budget()


def test_resizing_after_tensorflow_started_warns():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the pools are running from here on
    current = _runtime.tensorflow_threads()
    wanted = current[0] + 1
    with pytest.warns(RuntimeWarning, match="already running, so they keep their size"):
        assert _runtime.configure_tensorflow_threads(wanted) is None
    assert _runtime.tensorflow_threads() == current


def test_dask_workers_get_their_threads():
    # Dask's nanny sets OMP_NUM_THREADS=1 in each worker process; a worker running 2
    # tasks at once in 2 threads gets 2 TensorFlow threads, its own share of the cores.
    distributed = pytest.importorskip("distributed", reason="dask[distributed] (the dask extra) not installed")
    if any(name in os.environ for name in THREAD_VARIABLES[:3]):
        pytest.skip("an explicit thread variable is set in this environment")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert client.submit(_runtime.tensorflow_threads, pure=False).result(timeout=240) == (2, 2)
