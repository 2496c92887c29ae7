"""The README's code runs as written.

Every ``python`` block runs, in order, in one namespace (later blocks use what earlier
ones made); every ``skbackdoor`` command of a ``bash`` block runs as a subprocess and must
succeed with nothing on stderr. Blocks and commands that need the CSAW-HackML-2020 files
(weights or ``.h5`` data, not in this repository) are skipped, but their flags are
checked against the command's parser.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NEEDS_CSAW = re.compile(r"bd_weights|bd_net|clean_validation_data|clean_test_data|poisoned_data\.h5|faces/")


def _blocks(language):
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == language]


def _commands():
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "skbackdoor":
                commands.append(words[1:])
    return commands


def test_readme_has_commands_and_python():
    assert len(_blocks("python")) >= 2
    assert {words[0] for words in _commands()} == {"scan", "repair", "predict", "evaluate"}


def test_csaw_commands_use_options_that_exist():
    from skbackdoor.cli._parser import build_parser

    parser = build_parser()
    checked = 0
    for words in _commands():
        if NEEDS_CSAW.search(" ".join(words)):
            args = parser.parse_args(words)  # exits on an unknown or malformed option
            checked += 1
            if args.input_scale is not None:
                assert args.input_scale == pytest.approx(1 / 255)
    assert checked >= 4


def test_readme_python_and_toy_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for block in _blocks("python"):
        if NEEDS_CSAW.search(block):
            continue
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    ran = 0
    for words in _commands():
        if NEEDS_CSAW.search(" ".join(words)):
            continue
        result = subprocess.run(
            [sys.executable, "-m", "skbackdoor.cli", *words], capture_output=True, text=True, timeout=900,
            env={**__import__("os").environ, "PYTHONPATH": str(README.parent)},
        )
        assert result.returncode == 0, (words, result.stderr)
        assert result.stderr == "", (words, result.stderr)
        assert result.stdout.strip(), words
        ran += 1
    assert ran >= 4
    assert (tmp_path / "toy_scan" / "report.json").exists() and (tmp_path / "toy_goodnet.joblib").exists()
