"""The four commands: scan, repair, predict, evaluate."""

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from ._inputs import (
    CommandError,
    check_input_shape,
    check_label_range,
    check_output_dir,
    check_output_file,
    load_clean,
    load_defense,
    load_image_batch,
    load_model,
)

_SCREENING = {"auto": "auto", "on": True, "off": False}
# Rows of the table of smallest triggers that scan prints.
_SHOWN_LABELS = 5


# ------------------------------------------------------------------------ scan


def _neural_cleanse_options(args):
    options = dict(
        labels=args.labels, steps=args.steps, screening=_SCREENING[args.screening],
        n_candidates=args.candidates, screening_steps=args.screening_steps,
        batch_size=args.batch_size, anomaly_threshold=args.anomaly_threshold,
        random_state=args.random_state, verbose=int(args.verbose),
    )
    return {name: value for name, value in options.items() if value is not None}


def _check_labels_option(labels, n_classes):
    if labels is not None and labels[-1] >= n_classes:
        raise CommandError(f"--labels: the model has classes 0..{n_classes - 1}; {labels[-1]} is not one of them")


def _as_8_bit(values, pixel_range):
    """Pixels in the units the images were given in: raw 0-255, or 0-1 data times 255."""
    values = np.asarray(values, dtype=np.float64)
    if pixel_range[1] <= 1:
        values = values * 255
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _save_png(array, path):
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    Image.fromarray(array).save(path)


def _write_trigger(cleanse, label, X, folder):
    row = int(np.flatnonzero(cleanse.scanned_labels_ == label)[0])
    mask = cleanse.masks_[row]
    pattern = _as_8_bit(cleanse.patterns_[row], cleanse.pixel_range_)
    if pattern.shape[-1] == 1:
        pattern = np.repeat(pattern, 3, axis=-1)
    alpha = np.clip(np.round(mask * 255), 0, 255).astype(np.uint8)[..., np.newaxis]
    trigger_path = folder / f"trigger_{label}.png"
    _save_png(np.concatenate([pattern, alpha], axis=-1), trigger_path)
    triggered_path = folder / f"triggered_{label}.png"
    _save_png(_as_8_bit(cleanse.apply_trigger(X[:1], label)[0], cleanse.pixel_range_), triggered_path)
    return trigger_path, triggered_path


def _number(value, digits=4):
    """A float for JSON: NaN (label not searched) becomes null, infinity a string."""
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, digits)


def scan(args):
    from .. import NeuralCleanse
    from ..models import model_n_classes

    folder = Path(args.output_dir)
    check_output_dir(folder, "--output-dir")
    model = load_model(args)
    _check_labels_option(args.labels, model_n_classes(model))
    X, y, labels_from = load_clean(args.clean, model, max_images=args.max_images)
    cleanse = NeuralCleanse(model=model, projection_rounds=0, epochs=0, **_neural_cleanse_options(args))
    started = time.perf_counter()
    cleanse.fit(X, y)
    seconds = time.perf_counter() - started

    scanned = cleanse.scanned_labels_
    norms = cleanse.mask_norms_[scanned]
    by_size = scanned[np.argsort(norms, kind="stable")]
    flagged = cleanse.flagged_labels_.tolist()
    written = flagged if flagged else [int(by_size[0])]
    folder.mkdir(parents=True, exist_ok=True)
    files = {label: _write_trigger(cleanse, label, X, folder) for label in written}

    threshold = cleanse.anomaly_threshold_
    if flagged:
        print(f"backdoored: yes, {len(flagged)} label(s) flagged (anomaly index above {threshold:g})")
    else:
        # The most suspicious label: the largest index among the norms below the median.
        below = by_size[: max(1, len(by_size) // 2)]
        closest = below[np.argmax(np.nan_to_num(cleanse.anomaly_index_[below], nan=-1.0))]
        print(
            f"backdoored: no label flagged (threshold: anomaly index above {threshold:g}); the "
            f"most anomalous small trigger is label {closest}'s, anomaly index "
            f"{cleanse.anomaly_index_[closest]:.3f}"
        )
    print(f"{'label':>6}  {'anomaly index':>13}  {'trigger L1 norm':>15}  {'attack success':>14}  flagged")
    for label in list(dict.fromkeys(flagged + by_size[:_SHOWN_LABELS].tolist())):
        print(
            f"{label:>6}  {cleanse.anomaly_index_[label]:>13.2f}  {cleanse.mask_norms_[label]:>15.1f}  "
            f"{cleanse.attack_success_[label]:>14.1%}  {'yes' if label in flagged else 'no'}"
        )
    n_classes = cleanse.n_classes_
    how = (
        f"screening shortlisted {len(cleanse.candidates_)} + {len(cleanse.reference_labels_)} random reference labels"
        if cleanse.screening_scores_ is not None else "no screening"
    )
    print(f"scanned {len(scanned)} of {n_classes} labels fully ({how}) on {len(X)} clean images in {seconds:.0f} s")

    report = {
        "model": str(args.model),
        "clean": str(args.clean),
        "clean_images": int(len(X)),
        "labels_from": labels_from,
        "backdoored": bool(cleanse.is_backdoored_),
        "flagged_labels": flagged,
        "anomaly_threshold": threshold,
        "n_classes": int(n_classes),
        "screening": cleanse.screening_scores_ is not None,
        "candidates": cleanse.candidates_.tolist(),
        "reference_labels": cleanse.reference_labels_.tolist(),
        "seconds": round(seconds, 1),
        "labels": [
            {
                "label": int(label),
                "anomaly_index": _number(cleanse.anomaly_index_[label]),
                "trigger_l1_norm": _number(cleanse.mask_norms_[label]),
                "attack_success": _number(cleanse.attack_success_[label]),
                "flagged": int(label) in flagged,
            }
            for label in by_size
        ],
        "triggers": {str(label): [path.name for path in paths] for label, paths in files.items()},
        "parameters": {
            name: value for name, value in cleanse.get_params().items()
            if name != "model" and isinstance(value, (int, float, str, bool, type(None), list))
        },
    }
    report_path = folder / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    what = "trigger of the flagged label(s)" if flagged else "smallest trigger (no label flagged)"
    names = ", ".join(str(path) for paths in files.values() for path in paths)
    print(f"wrote {report_path}; {what}: {names}")


# ------------------------------------------------------------------------ repair


def repair(args):
    import joblib

    from .. import FinePruner, GoodNetClassifier, NeuralCleanse
    from ..models import model_n_classes, model_to_bytes, predict_proba_batches

    check_output_file(args.output, "--output", "goodnet.joblib")
    if args.save_model:
        check_output_file(args.save_model, "--save-model", "repaired.keras")
    model = load_model(args)
    if args.defense == "neural-cleanse":
        _check_labels_option(args.labels, model_n_classes(model))
    X, y, labels_from = load_clean(args.clean, model, max_images=args.max_images)
    tuning = {name: value for name, value in (("epochs", args.epochs), ("learning_rate", args.learning_rate)) if value is not None}
    if args.defense == "fine-pruning":
        repaired = FinePruner(
            model=model, layer=args.layer, prune_fraction=args.prune_fraction,
            max_accuracy_drop=args.max_accuracy_drop, fine_tuning=args.fine_tuning,
            max_fine_tuning_drop=args.max_fine_tuning_drop, random_state=args.random_state,
            verbose=int(args.verbose), **tuning,
        )
    else:
        repaired = NeuralCleanse(
            model=model, projection_rounds=args.projection_rounds, unlearning_rounds=args.unlearning_rounds,
            unlearn_labels=args.unlearn_labels, **_neural_cleanse_options(args), **tuning,
        )
    # G fits B' itself so that it can hold part of the clean data out of the repair and set
    # its disagreement threshold on images B' was not tuned on.
    with warnings.catch_warnings():
        # The guard's fallback is reported below, as a result line.
        warnings.filterwarnings("ignore", message="FinePruner: the .* fine-tuning cost", category=UserWarning)
        warnings.filterwarnings("ignore", message="GoodNetClassifier: the repaired model answers", category=UserWarning)
        goodnet = GoodNetClassifier(
            badnet=model, repaired=repaired, answer=args.answer, random_state=args.random_state
        ).fit(X, y)
    repaired = goodnet.repaired_
    joblib.dump(goodnet, args.output)

    if args.defense == "fine-pruning":
        print(f"pruned {len(repaired.pruned_channels_)} channels of {repaired.layer_}")
        check = repaired.fine_tuning_check_
        if check is not None:
            verdict = (
                f"kept {check['recipe']}" if check["passed"] else
                f"used {repaired.fine_tuning_} instead (head kept: clean accuracy usually kept, the backdoor may "
                "remain; with few clean images per class, try --defense neural-cleanse)"
            )
            print(
                f"fine-tuning check: {check['recipe']} lost {100 * check['drop']:.1f} points of clean accuracy "
                f"on {check['n_held_out']} held-out images; {verdict}"
            )
    else:
        flagged = repaired.flagged_labels_.tolist()
        print(f"flagged labels: {flagged if flagged else 'none'}; unlearned the triggers of {repaired.unlearned_labels_.tolist()}")
    badnet_accuracy = np.mean(predict_proba_batches(model, X).argmax(axis=1) == y)
    goodnet_labels = goodnet.predict(X)
    answering = {"repaired": "B'", "reference": "B", "confident": "the surer of B and B'"}[goodnet.answer_]
    print(
        f"on the --clean data (labels: {labels_from}): accuracy of B {badnet_accuracy:.4f}, "
        f"of B' {repaired.score(X, y):.4f}; GoodNet flags {np.mean(goodnet_labels == goodnet.poisoned_label_):.4f}, "
        f"answers with {answering} elsewhere (--answer {args.answer})"
    )
    check = goodnet.repaired_check_
    if not check["passed"]:
        consequence = (
            "the GoodNet loses that accuracy too" if goodnet.answer_ == "repaired"
            else f"the GoodNet answers with {answering}, and a B' this far from B lets more poisoned inputs through"
        )
        print(
            f"GoodNet check: B' answers {check['accuracy']:.4f} of the {check['n_images']} clean images "
            f"{'held out for its threshold' if check['held_out'] else 'of --clean'} correctly, B "
            f"{check['badnet_accuracy']:.4f}; {consequence} (give more clean images of every class)"
        )
    print(f"GoodNet written to {args.output}")
    if args.save_model:
        Path(args.save_model).write_bytes(model_to_bytes(repaired.model_))
        print(f"repaired model B' written to {args.save_model}")


# ------------------------------------------------------------------------ predict / evaluate


def _labeller(args):
    """Return ``(label_fn, input_shape, n_classes)``: labels in ``0..n_classes`` for raw images."""
    from sklearn.base import is_outlier_detector

    from ..models import model_input_shape, model_n_classes, predict_proba_batches

    model = load_model(args) if args.model else None
    defense = load_defense(args.defense) if args.defense else None
    if model is None and defense is None:
        raise CommandError("give --model, --defense, or both")
    if defense is not None and is_outlier_detector(defense):
        model = model if model is not None else getattr(defense, "model_", None)
        if model is None:
            raise CommandError("a detector defense needs --model")
        n_classes = model_n_classes(model)

        def label(X):
            labels = predict_proba_batches(model, X).argmax(axis=1)
            return np.where(defense.predict(X) == -1, n_classes, labels)

        return label, model_input_shape(model), n_classes
    if defense is not None:
        badnet = getattr(defense, "badnet_", None)
        holder = badnet if badnet is not None else defense.model_
        return defense.predict, model_input_shape(holder), model_n_classes(holder)
    return (lambda X: predict_proba_batches(model, X).argmax(axis=1)), model_input_shape(model), model_n_classes(model)


def predict(args):
    label, shape, _ = _labeller(args)
    paths, X = load_image_batch(args.images, shape)
    for path, value in zip(paths, label(X)):
        print(f"{path}\t{int(value)}" if args.show_paths else int(value))


def evaluate(args):
    from ..datasets import load_csaw_h5
    from ..metrics import attack_success_rate, clean_accuracy_score

    if args.target is not None and len(args.target) != len(args.poisoned):
        raise CommandError(f"give one --target per --poisoned file ({len(args.target)} for {len(args.poisoned)})")
    label, shape, n_classes = _labeller(args)
    datasets = []
    for index, path in enumerate([args.clean, *args.poisoned]):
        X, y = load_csaw_h5(path)
        check_input_shape(X, shape, f"'{path}'")
        if index == 0:
            check_label_range(y, n_classes, f"'{path}'")
        elif args.target is not None:
            target = args.target[index - 1]
            if not 0 <= target < n_classes:
                raise CommandError(f"--target {target}: the model has classes 0..{n_classes - 1}")
            y = np.full(len(X), target)
        else:
            check_label_range(y, n_classes, f"'{path}' (its labels serve as the targets; or give --target)")
        datasets.append((path, X, y))

    (_, X_clean, y_clean), poisoned = datasets[0], datasets[1:]
    clean_pred = np.asarray(label(X_clean))
    print(f"clean accuracy (CCA)\t{clean_accuracy_score(y_clean, clean_pred):.4f}")
    print(f"clean inputs flagged (FRR)\t{np.mean(clean_pred == n_classes):.4f}")
    for path, X, targets in poisoned:
        predicted = np.asarray(label(X))
        print(f"{path}: attack success rate (ASR)\t{attack_success_rate(targets, predicted):.4f}")
        print(f"{path}: poisoned inputs flagged\t{np.mean(predicted == n_classes):.4f}")


COMMANDS = {"scan": scan, "repair": repair, "predict": predict, "evaluate": evaluate}
