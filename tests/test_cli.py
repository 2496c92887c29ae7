"""The ``skbackdoor`` console command on a tiny model and on the real CSAW weights."""

import subprocess
import sys
from pathlib import Path

import h5py
import joblib
import numpy as np
import pytest
from PIL import Image

from skbackdoor import STRIPDetector
from skbackdoor.cli import main
from skbackdoor.models import predict_proba_batches


def _write_pngs(folder, images):
    paths = []
    for index, image in enumerate(images):
        path = folder / f"image_{index}.png"
        array = np.clip(image, 0, 255).astype(np.uint8)
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
        paths.append(str(path))
    return paths


def _write_csaw_h5(path, X, y):
    with h5py.File(path, "w") as handle:
        handle["data"] = np.transpose(X, (0, 3, 1, 2)).astype(np.float64)  # CSAW layout (N, C, H, W)
        handle["label"] = y.astype(np.float64)


@pytest.fixture(scope="module")
def tiny_files(patch_badnet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model_path = folder / "badnet.keras"
    patch_badnet.model.save(model_path)
    # PNGs hold whole pixel values: stretch the digits' 0..16 range to 0..255 and back via input scale
    return folder, model_path


def run(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_prints_one_label_per_image(patch_badnet, tiny_files, capsys):
    folder, model_path = tiny_files
    images = patch_badnet.X_test[:5]
    paths = _write_pngs(folder, images)
    status, out, _ = run(capsys, "predict", "--model", model_path, *paths)
    assert status == 0
    expected = predict_proba_batches(patch_badnet.model, images).argmax(axis=1)
    assert [int(line) for line in out.split()] == expected.tolist()
    status, out, _ = run(capsys, "predict", "--show-paths", "--model", model_path, paths[0])
    assert out.strip() == f"{paths[0]}\t{expected[0]}"


def test_predict_with_a_detector_defense_answers_n_for_flagged_images(patch_badnet, tiny_files, capsys):
    folder, model_path = tiny_files
    detector = STRIPDetector(model=patch_badnet.model, frr=0.05, random_state=0).fit(patch_badnet.X_val)
    defense_path = folder / "strip.joblib"
    joblib.dump(detector, defense_path)
    images = np.concatenate([patch_badnet.X_test[:4], patch_badnet.X_poisoned[:4]])
    paths = _write_pngs(folder, images)
    status, out, _ = run(capsys, "predict", "--model", model_path, "--defense", defense_path, *paths)
    assert status == 0
    labels = predict_proba_batches(patch_badnet.model, images).argmax(axis=1)
    expected = np.where(detector.predict(images) == -1, 10, labels)
    assert [int(line) for line in out.split()] == expected.tolist()


def test_bad_paths_and_wrong_sizes_exit_2_with_one_line(tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    status, _, err = run(capsys, "predict", "--model", tmp_path / "absent.keras", _write_pngs(tmp_path, np.zeros((1, 8, 8, 1)))[0])
    assert status == 2 and err.startswith("skbackdoor: error:") and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, "predict", "--model", model_path, tmp_path / "absent.png")
    assert status == 2 and "absent.png" in err and len(err.strip().splitlines()) == 1
    wrong = _write_pngs(tmp_path, np.zeros((1, 9, 8, 1)))
    status, _, err = run(capsys, "predict", "--model", model_path, *wrong)
    assert status == 2 and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, "predict", "--model", model_path, "--defense", tmp_path / "absent.joblib", *wrong)
    assert status == 2 and "no defense file" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["predict"])
    assert exit_info.value.code == 2


def test_repair_then_evaluate_on_csaw_style_h5_files(patch_badnet, tiny_files, capsys):
    folder, model_path = tiny_files
    clean = folder / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    test = folder / "test.h5"
    _write_csaw_h5(test, patch_badnet.X_test, patch_badnet.y_test)
    poisoned = folder / "poisoned.h5"
    _write_csaw_h5(poisoned, patch_badnet.X_poisoned, patch_badnet.y_target)
    output = folder / "goodnet.joblib"
    saved = folder / "repaired.keras"
    status, out, _ = run(
        capsys, "repair", "--model", model_path, "--clean", clean, "--output", output,
        "--save-model", saved, "--prune-fraction", "0.5", "--epochs", "1",
    )
    assert status == 0, out
    assert output.exists() and saved.exists() and "pruned 16 channels" in out
    status, out, _ = run(capsys, "evaluate", "--defense", output, "--clean", test, "--poisoned", poisoned)
    assert status == 0
    lines = dict(line.rsplit("\t", 1) for line in out.strip().splitlines())
    goodnet = joblib.load(output)
    expected_cca = np.mean(goodnet.predict(patch_badnet.X_test) == patch_badnet.y_test)
    assert float(lines["clean accuracy (CCA)"]) == pytest.approx(expected_cca, abs=1e-4)
    expected_asr = np.mean(goodnet.predict(patch_badnet.X_poisoned) == 0)
    assert float(lines[f"{poisoned}: attack success rate (ASR)"]) == pytest.approx(expected_asr, abs=1e-4)
    status, out, _ = run(capsys, "evaluate", "--model", model_path, "--clean", test, "--poisoned", poisoned, "--target", "0")
    assert status == 0 and float(out.splitlines()[2].rsplit("\t", 1)[1]) > 0.8  # the BadNet's own ASR


def test_predict_on_the_real_csaw_net(csaw_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    paths = _write_pngs(tmp_path, rng.integers(0, 256, size=(3, 55, 47, 3)))
    status, out, _ = run(
        capsys, "predict", "--model", csaw_dir / "sunglasses_bd_weights.h5",
        "--architecture", "csaw-deepid", "--input-scale", 1 / 255, *paths,
    )
    assert status == 0
    labels = [int(line) for line in out.split()]
    assert len(labels) == 3 and all(0 <= label < 1283 for label in labels)
    status, _, err = run(capsys, "predict", "--model", csaw_dir / "sunglasses_bd_weights.h5", *paths)
    assert status == 2 and "weights only" in err


def test_console_script_is_installed_and_warns_about_joblib():
    executable = Path(sys.executable).with_name("skbackdoor")
    if not executable.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (package not pip-installed)")
    result = subprocess.run([str(executable), "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "unsafe as pickle" in " ".join(result.stdout.split())
