"""The ``skbackdoor`` console command on a tiny model and on the real CSAW weights."""

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import joblib
import numpy as np
import pytest
from PIL import Image

from skbackdoor import STRIPDetector
from skbackdoor._log_level import LIBRARY_LOG_LEVEL
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


# ---------------------------------------------------------------- scan


def test_scan_flags_the_target_of_a_test_badnet(patch_badnet, tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    out_dir = tmp_path / "scan"
    status, out, err = run(
        capsys, "scan", "--model", model_path, "--clean", clean, "--output-dir", out_dir,
        "--steps", "150", "--max-images", "200",
    )
    assert status == 0, err
    report = json.loads((out_dir / "report.json").read_text())
    assert report["clean_images"] == 200 and report["n_classes"] == 10 and not report["screening"]
    assert [row["label"] for row in report["labels"]] == sorted(
        range(10), key=lambda label: next(r["trigger_l1_norm"] for r in report["labels"] if r["label"] == label)
    )
    # the 2x2 patch target needs the smallest trigger of the ten digits
    assert report["labels"][0]["label"] == patch_badnet.target
    assert out.splitlines()[0].startswith("backdoored: " + ("yes" if report["backdoored"] else "no"))
    assert report["backdoored"] == bool(report["flagged_labels"])
    shown = {int(line.split()[0]): line.split() for line in out.splitlines()[2:] if line.split()[0].isdigit()}
    for row in report["labels"]:
        if row["label"] in shown:
            assert float(shown[row["label"]][1]) == pytest.approx(row["anomaly_index"], abs=0.01)
    for label, names in report["triggers"].items():
        trigger = np.asarray(Image.open(out_dir / names[0]))
        assert trigger.shape == (8, 8, 4)  # pattern RGB + mask as alpha
        assert np.asarray(Image.open(out_dir / names[1])).shape == (8, 8)
    assert str(out_dir / "report.json") in out


def test_scan_of_a_folder_uses_the_models_labels_and_checks_options(patch_badnet, tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    images = tmp_path / "images"
    images.mkdir()
    _write_pngs(images, patch_badnet.X_val[:24])  # the net takes the digits' raw 0..16 values
    status, out, err = run(
        capsys, "scan", "--model", model_path, "--clean", images,
        "--output-dir", tmp_path / "scan", "--labels", "0-3", "--steps", "20", "--batch-size", "8",
    )
    assert status == 0, err
    report = json.loads((tmp_path / "scan" / "report.json").read_text())
    assert sorted(row["label"] for row in report["labels"]) == [0, 1, 2, 3]
    assert report["labels_from"].startswith("the model's own predictions")
    status, _, err = run(capsys, "scan", "--model", model_path, "--clean", images, "--labels", "0,12")
    assert status == 2 and "classes 0..9; 12 is not one of them" in err
    (tmp_path / "taken").write_text("")
    status, _, err = run(capsys, "scan", "--model", model_path, "--clean", images, "--output-dir", tmp_path / "taken")
    assert status == 2 and "exists and is not a folder" in err
    with pytest.raises(SystemExit):
        main(["scan", "--model", str(model_path), "--clean", str(images), "--labels", "3-1"])
    assert "not a list of labels" in capsys.readouterr().err


@pytest.mark.parametrize("max_drop, used", [("0", "sgd"), ("1", "fst"), ("none", "fst")])
def test_repair_reports_the_fine_tuning_check_on_stdout(patch_badnet, tiny_files, tmp_path, capsys, max_drop, used):
    folder, model_path = tiny_files
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    output = tmp_path / "goodnet.joblib"
    with warnings.catch_warnings():
        # The fallback is a result line, not a Python warning.
        warnings.filterwarnings("error", message="FinePruner", category=UserWarning)
        warnings.filterwarnings("error", message="GoodNetClassifier: the repaired", category=UserWarning)
        status, out, err = run(
            capsys, "repair", "--model", model_path, "--clean", clean, "--output", output, "--epochs", "1",
            "--max-fine-tuning-drop", max_drop,
        )
    assert status == 0, err
    goodnet = joblib.load(output)
    # GoodNet's own check of B' (on the images held out for its threshold) is a result line too.
    goodnet_check = goodnet.repaired_check_
    assert goodnet_check["held_out"]
    assert ("GoodNet check: B' answers" in out) == (not goodnet_check["passed"])
    repaired = goodnet.repaired_
    assert repaired.fine_tuning_ == used
    check = repaired.fine_tuning_check_
    if max_drop == "none":
        assert repaired.max_fine_tuning_drop is None and check is None and "fine-tuning check" not in out
        return
    assert repaired.max_fine_tuning_drop == float(max_drop)
    assert f"fine-tuning check: fst lost {100 * check['drop']:.1f} points" in out
    assert ("used sgd instead" in out) == (used == "sgd")


@pytest.mark.parametrize("answer", ["auto", "repaired", "reference", "confident"])
def test_repair_answer_option_reaches_the_goodnet_and_is_reported(patch_badnet, tiny_files, tmp_path, capsys, answer):
    folder, model_path = tiny_files
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    output = tmp_path / "goodnet.joblib"
    status, out, err = run(
        capsys, "repair", "--model", model_path, "--clean", clean, "--output", output, "--epochs", "1",
        "--answer", answer,
    )
    assert status == 0, err
    goodnet = joblib.load(output)
    assert goodnet.answer == answer
    check = goodnet.repaired_check_
    if answer == "auto":
        assert goodnet.answer_ == ("confident" if check["reference_accuracy"] > check["accuracy"] else "repaired")
    else:
        assert goodnet.answer_ == answer
    answering = {"repaired": "B'", "reference": "B", "confident": "the surer of B and B'"}[goodnet.answer_]
    assert f"answers with {answering} elsewhere (--answer {answer})" in out
    with pytest.raises(SystemExit):
        main(["repair", "--model", str(model_path), "--clean", str(clean), "--output", str(output), "--answer", "badnet"])
    assert "invalid choice: 'badnet'" in capsys.readouterr().err


def test_repair_with_neural_cleanse(patch_badnet, tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    output = tmp_path / "goodnet.joblib"
    status, out, err = run(
        capsys, "repair", "--defense", "neural-cleanse", "--model", model_path, "--clean", clean,
        "--output", output, "--steps", "60", "--epochs", "1", "--projection-rounds", "2",
        "--unlearning-rounds", "2",
    )
    assert status == 0, err
    goodnet = joblib.load(output)
    assert type(goodnet.repaired_).__name__ == "NeuralCleanse"
    assert goodnet.repaired_.epochs == 1 and goodnet.repaired_.steps == 60
    assert goodnet.repaired_.projection_rounds == 2 and goodnet.repaired_.unlearning_rounds == 2
    assert goodnet.repaired_.residual_mask_norms_.shape[0] == 1
    assert "unlearned the triggers of" in out and f"GoodNet written to {output}" in out


# ---------------------------------------------------------------- bad input (issue 15)


@pytest.fixture(scope="module")
def digit_pngs(patch_badnet, tmp_path_factory):
    return _write_pngs(tmp_path_factory.mktemp("pngs"), patch_badnet.X_test[:2])


def test_defense_that_is_not_a_skbackdoor_joblib_file(tiny_files, digit_pngs, tmp_path, capsys):
    folder, model_path = tiny_files
    noise = tmp_path / "noise.joblib"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    status, _, err = run(capsys, "predict", "--defense", noise, *digit_pngs)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "is not a joblib file written by skbackdoor" in err and "could not be unpickled" in err
    h5_model = tmp_path / "model.h5"
    h5_model.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    status, _, err = run(capsys, "predict", "--defense", h5_model, *digit_pngs)
    assert status == 2 and "it is an HDF5 file" in err and "--model" in err
    status, _, err = run(capsys, "predict", "--defense", model_path, *digit_pngs)
    assert status == 2 and "zip archive (a .keras model?)" in err
    a_dict = tmp_path / "dict.joblib"
    joblib.dump({"model": 1}, a_dict)
    status, _, err = run(capsys, "predict", "--defense", a_dict, *digit_pngs)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "holds a builtins.dict, not a skbackdoor defense" in err
    unfitted = tmp_path / "unfitted.joblib"
    joblib.dump(STRIPDetector(), unfitted)
    status, _, err = run(capsys, "predict", "--defense", unfitted, *digit_pngs)
    assert status == 2 and "unfitted STRIPDetector" in err


def test_evaluate_refuses_labels_outside_the_models_classes(patch_badnet, tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    wrong = tmp_path / "labels99.h5"
    _write_csaw_h5(wrong, patch_badnet.X_test[:20], np.full(20, 99))
    status, out, err = run(capsys, "evaluate", "--model", model_path, "--clean", wrong)
    assert status == 2 and out == ""
    assert "labels outside the model's classes 0..9 (10 classes): 99" in err
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_test[:20], patch_badnet.y_test[:20])
    status, _, err = run(capsys, "evaluate", "--model", model_path, "--clean", clean, "--poisoned", clean, "--target", "10")
    assert status == 2 and "--target 10: the model has classes 0..9" in err


def test_evaluate_refuses_images_of_another_size(tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    other = tmp_path / "faces.h5"
    _write_csaw_h5(other, np.zeros((3, 55, 47, 3)), np.zeros(3))
    status, _, err = run(capsys, "evaluate", "--model", model_path, "--clean", other)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "holds images of shape (55, 47, 3)" in err and "the model takes (8, 8, 1)" in err


def test_repair_checks_the_output_path_before_working(patch_badnet, tiny_files, tmp_path, capsys):
    folder, model_path = tiny_files
    clean = tmp_path / "clean.h5"
    _write_csaw_h5(clean, patch_badnet.X_val, patch_badnet.y_val)
    started = time.perf_counter()
    status, out, err = run(capsys, "repair", "--model", model_path, "--clean", clean, "--output", tmp_path)
    assert status == 2 and out == "" and "--output" in err and "is a directory" in err
    assert time.perf_counter() - started < 5  # refused before fine-pruning
    status, _, err = run(
        capsys, "repair", "--model", model_path, "--clean", clean, "--output", tmp_path / "g.joblib",
        "--save-model", tmp_path / "missing" / "b.keras",
    )
    assert status == 2 and "does not exist" in err


def test_input_scale_accepts_fractions_and_refuses_nonsense(capsys):
    from skbackdoor.cli._parser import scale

    assert scale("1/255") == pytest.approx(1 / 255) and scale("0.5") == 0.5
    for bad in ("0", "-1", "1/0", "abc"):
        with pytest.raises(SystemExit):
            main(["predict", "--model", "m.keras", "--input-scale", bad, "x.png"])
        assert "--input-scale" in capsys.readouterr().err
    assert scale("1/2,1/4,0.125") == [0.5, 0.25, 0.125]
    for bad in ("1/2,0,1", "1,,2"):
        with pytest.raises(SystemExit):
            main(["predict", "--model", "m.keras", "--input-scale", bad, "x.png"])
        assert "--input-scale" in capsys.readouterr().err


def test_max_fine_tuning_drop_takes_a_drop_or_none(capsys):
    from skbackdoor.cli._parser import drop_or_none

    assert drop_or_none("none") is None and drop_or_none("0.25") == 0.25
    for bad in ("2", "-0.1", "ten", "nan"):
        with pytest.raises(SystemExit):
            main(["repair", "--model", "m.keras", "--clean", "c.h5", "--output", "g.joblib",
                  "--max-fine-tuning-drop", bad])
        err = capsys.readouterr().err
        assert "--max-fine-tuning-drop" in err and "must be 'none' or a drop between 0 and 1" in err


def test_input_offset_reaches_the_network(tmp_path, capsys):
    """``--input-offset`` and a per-channel ``--input-scale`` give the net (x - offset) * scale."""
    import keras
    from PIL import Image

    from skbackdoor.cli._parser import offset

    assert offset("125.3,123,-1/2") == [125.3, 123.0, -0.5] and offset("0") == 0.0
    with pytest.raises(SystemExit):
        main(["predict", "--model", "m.keras", "--input-offset", "mean", "x.png"])
    assert "--input-offset" in capsys.readouterr().err
    # A net whose class is decided by the sign of its (normalised) green channel.
    inputs = keras.Input((4, 4, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    head = keras.layers.Dense(2)
    model = keras.Model(inputs, head(mean))
    head.set_weights([np.array([[0, 0], [-1, 1], [0, 0]], dtype="float32"), np.zeros(2, "float32")])
    model_path = tmp_path / "sign.keras"
    model.save(model_path)
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[..., 1] = 100
    Image.fromarray(image).save(tmp_path / "g100.png")
    args = ["predict", "--model", str(model_path), "--input-scale", "1,1/10,1", str(tmp_path / "g100.png")]
    assert main(args) == 0 and capsys.readouterr().out.split() == ["1"]      # green 100 > 0
    assert main([*args[:5], "--input-offset", "0,150,0", *args[5:]]) == 0
    assert capsys.readouterr().out.split() == ["0"]                          # (100 - 150) / 10 < 0


# ---------------------------------------------------------------- help, version, quiet


def test_help_defaults_are_the_estimators_defaults():
    from skbackdoor import FinePruner, NeuralCleanse
    from skbackdoor.cli._parser import FINE_PRUNER_DEFAULTS, NEURAL_CLEANSE_DEFAULTS

    for estimator, read in ((FinePruner(), FINE_PRUNER_DEFAULTS), (NeuralCleanse(), NEURAL_CLEANSE_DEFAULTS)):
        params = estimator.get_params()
        used = {"epochs", "learning_rate"} | (
            {"prune_fraction", "max_accuracy_drop", "fine_tuning"} if isinstance(estimator, FinePruner)
            else {"steps", "n_candidates", "screening_steps", "batch_size", "anomaly_threshold"}
        )
        assert {name: read[name] for name in used} == {name: params[name] for name in used}


def test_repair_chooses_the_fine_tuning_recipe():
    from skbackdoor.cli._parser import build_parser

    common = ["repair", "--model", "m.keras", "--clean", "c.h5", "--output", "g.joblib"]
    assert build_parser().parse_args(common).fine_tuning == "fst"
    assert build_parser().parse_args([*common, "--fine-tuning", "plain"]).fine_tuning == "plain"
    assert build_parser().parse_args([*common, "--fine-tuning", "lda"]).fine_tuning == "lda"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--fine-tuning", "adam"])


def test_repair_chooses_the_projection_rounds():
    from skbackdoor import NeuralCleanse
    from skbackdoor.cli._parser import build_parser

    common = ["repair", "--model", "m.keras", "--clean", "c.h5", "--output", "g.joblib"]
    assert build_parser().parse_args(common).projection_rounds == NeuralCleanse().projection_rounds
    assert build_parser().parse_args([*common, "--projection-rounds", "0"]).projection_rounds == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--projection-rounds", "-1"])


def test_repair_chooses_the_unlearning_rounds_and_the_unlearned_labels():
    from skbackdoor import NeuralCleanse
    from skbackdoor.cli._parser import build_parser

    common = ["repair", "--model", "m.keras", "--clean", "c.h5", "--output", "g.joblib"]
    defaults = build_parser().parse_args(common)
    assert (defaults.unlearning_rounds, defaults.unlearn_labels) == (
        NeuralCleanse().unlearning_rounds, NeuralCleanse().unlearn_labels)
    assert defaults.unlearning_rounds == "auto"
    chosen = build_parser().parse_args([*common, "--unlearning-rounds", "3", "--unlearn-labels", "all"])
    assert (chosen.unlearning_rounds, chosen.unlearn_labels) == (3, "all")
    untargeted = build_parser().parse_args([*common, "--unlearn-labels", "untargeted"])
    assert untargeted.unlearn_labels == "untargeted"
    for wrong in (["--unlearning-rounds", "0"], ["--unlearning-rounds", "many"], ["--unlearn-labels", "some"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*common, *wrong])


def _command(*argv):
    return [sys.executable, "-m", "skbackdoor.cli", *map(str, argv)]


def _environment():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TF_CPP", "TF_NUM_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["OMP_NUM_THREADS"] = "1"  # as in a loky worker: skbackdoor._runtime imports TensorFlow at once
    return env


def test_help_and_version_do_not_import_tensorflow():
    probe = (
        "import sys; from skbackdoor.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['scan', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_environment(), timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert result.stdout.startswith("skbackdoor ")
    assert "(default: 300)" in " ".join(result.stdout.split())  # --steps shows its default
    assert elapsed < 10  # about 0.5 s on an idle machine; generous for a loaded one


def test_every_option_has_help():
    import argparse

    from skbackdoor.cli._parser import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_predict_on_real_csaw_faces_prints_only_the_labels(csaw_dir, tmp_path):
    faces = Path(__file__).resolve().parents[2] / "shared" / "data" / "csaw_faces" / "faces.npz"
    if not faces.exists():
        pytest.skip(f"real CSAW faces not found at {faces}")
    images = np.load(faces)["x"][:4]
    paths = _write_pngs(tmp_path, images)
    model = csaw_dir / "sunglasses_bd_weights.h5"
    argv = ["predict", "--model", model, "--architecture", "csaw-deepid", "--input-scale", "1/255", *paths]
    result = subprocess.run(_command(*argv), capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0
    assert result.stderr == ""  # no TensorFlow, absl, oneDNN or grappler lines
    assert len(result.stdout.split()) == 4 and all(0 <= int(v) <= 1282 for v in result.stdout.split())
    verbose = subprocess.run(_command(*argv, "--verbose"), capture_output=True, text=True, env=_environment(), timeout=300)
    assert verbose.returncode == 0 and verbose.stdout == result.stdout


def test_predict_verbose_brings_back_tensorflows_start_up_lines(csaw_dir, tmp_path):
    # What TensorFlow prints at the library's level depends on the machine: the oneDNN
    # notice on some CPUs only, and on some nothing at all.
    markers = [marker for marker in ("oneDNN", "absl") if marker in _tensorflow_start_up_lines()]
    if not markers:
        pytest.skip("TensorFlow prints no oneDNN or absl line at start-up on this machine, "
                    "so there is nothing for --verbose to bring back")
    paths = _write_pngs(tmp_path, np.zeros((2, 55, 47, 3), dtype=np.uint8))
    model = csaw_dir / "sunglasses_bd_weights.h5"
    argv = ["predict", "--model", model, "--architecture", "csaw-deepid", "--input-scale", "1/255", *paths]
    verbose = subprocess.run(_command(*argv, "--verbose"), capture_output=True, text=True, env=_environment(), timeout=300)
    assert verbose.returncode == 0 and len(verbose.stdout.split()) == 2
    assert any(marker in verbose.stderr for marker in markers)


def _tensorflow_start_up_lines():
    """What a bare ``import tensorflow`` writes to stderr at skbackdoor's library log level."""
    code = f"import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '{LIBRARY_LOG_LEVEL}'; import tensorflow"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_environment(),
                          timeout=300).stderr
