"""Importing skbackdoor's estimators leaves stderr to the user (skbackdoor._stderr, _runtime)."""

import os
import subprocess
import sys
from pathlib import Path

from skbackdoor._stderr import without_start_up_lines

ROOT = Path(__file__).resolve().parents[1]
# An estimator, Keras and one TensorFlow operation, in a fresh process: TensorFlow starts there.
CODE = "from skbackdoor import FinePruner; import keras; print(keras.ops.convert_to_numpy(keras.ops.ones(2)))"


def _run(**variables):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(variables, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_tensorflow_start_up_lines_are_dropped_unless_the_user_set_a_level():
    assert _run().stderr == ""  # no absl notice, no oneDNN line
    verbose = _run(TF_CPP_MIN_LOG_LEVEL="0").stderr  # the user asked for TensorFlow's output
    assert "oneDNN" in verbose or "absl::InitializeLog" in verbose


def test_only_the_start_up_lines_are_dropped():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796138058.894117    1269 port.cc:153] oneDNN custom operations are on.\n"
        "W0000 00:00:1796138058.900000    1269 some_file.cc:12] a warning\n"
        "E0000 00:00:1796138059.000000    1269 tfg_optimizer_hook.cc:135] an error\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.\n"
        "a line of the user's own\n"
        "I0000 without the rest of the format\n"
    )
    assert without_start_up_lines(text) == (
        "E0000 00:00:1796138059.000000    1269 tfg_optimizer_hook.cc:135] an error\n"
        "a line of the user's own\n"
        "I0000 without the rest of the format\n"
    )
