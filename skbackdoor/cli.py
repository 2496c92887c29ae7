"""The ``skbackdoor`` console command: predict, evaluate and repair from the shell.

``skbackdoor predict`` prints one label per image in the CSAW-HackML submission format:
the class in ``0 .. N-1``, or ``N`` when the defense judges the image poisoned.

Security: ``--defense`` loads a joblib file, which is as unsafe as ``pickle.load``:
it can run any code. Only load files you made or trust.
"""

import argparse
import sys

import numpy as np

__all__ = ["main"]

_UNSAFE = (
    "Loading a joblib file is as unsafe as pickle: it can execute arbitrary code. "
    "Only pass files you created or trust."
)


class CommandError(Exception):
    """A user error reported as one line on stderr with exit status 2."""


def _add_model_arguments(parser, *, required):
    parser.add_argument("--model", required=required, help="BadNet file: .keras, .h5, or weights-only .h5 with --architecture")
    parser.add_argument("--architecture", default=None, help="architecture of a weights-only .h5 file, e.g. csaw-deepid")
    parser.add_argument(
        "--input-scale", type=float, default=None,
        help="scale applied to raw pixels before the network (0.00392 = 1/255 for nets trained on pixels/255)",
    )


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="skbackdoor",
        description="Detect poisoned inputs and repair backdoored Keras classifiers.",
        epilog=_UNSAFE,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict", help="print one label per image (N = poisoned)",
        description="Print one label per image: its class, or N (the number of classes) when judged poisoned.",
        epilog=_UNSAFE,
    )
    _add_model_arguments(predict, required=False)
    predict.add_argument("--defense", default=None, help="a joblib file of a fitted defense (GoodNetClassifier, FinePruner or STRIPDetector). " + _UNSAFE)
    predict.add_argument("--show-paths", action="store_true", help="print 'PATH<TAB>LABEL' instead of the label alone")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")

    evaluate = commands.add_parser(
        "evaluate", help="clean accuracy, attack success and detection rates on CSAW .h5 files",
        epilog=_UNSAFE,
    )
    _add_model_arguments(evaluate, required=False)
    evaluate.add_argument("--defense", default=None, help="a joblib file of a fitted defense. " + _UNSAFE)
    evaluate.add_argument("--clean", required=True, help="CSAW .h5 file of clean images and their true labels")
    evaluate.add_argument("--poisoned", action="append", default=[], help="CSAW .h5 file of poisoned images (repeatable)")
    evaluate.add_argument(
        "--target", type=int, action="append", default=None,
        help="attacker's target label for each --poisoned file (default: the labels stored in the file)",
    )

    repair = commands.add_parser(
        "repair", help="fine-prune a BadNet on clean data and save the GoodNet (and B')",
        description="Fine-prune the BadNet on a clean CSAW .h5 file and save a GoodNetClassifier G(B, B') with joblib.",
    )
    _add_model_arguments(repair, required=True)
    repair.add_argument("--clean", required=True, help="CSAW .h5 file of clean validation images and labels")
    repair.add_argument("--output", required=True, help="where to write the fitted GoodNetClassifier (.joblib)")
    repair.add_argument("--save-model", default=None, help="also save the repaired network B' as a .keras file")
    repair.add_argument("--layer", default=None, help="convolution to prune (default: the last Conv2D; CSAW reports use conv_3)")
    repair.add_argument("--prune-fraction", type=float, default=None, help="fraction of channels to prune (default: by --max-accuracy-drop)")
    repair.add_argument("--max-accuracy-drop", type=float, default=0.04, help="prune while validation accuracy stays within this drop")
    repair.add_argument("--epochs", type=int, default=10)
    repair.add_argument("--learning-rate", type=float, default=1e-3)
    repair.add_argument("--random-state", type=int, default=0)
    return parser


def _load_model(args):
    from .models import load_badnet

    return load_badnet(args.model, architecture=args.architecture, input_scale=args.input_scale)


def _load_defense(path):
    import joblib

    try:
        return joblib.load(path)
    except FileNotFoundError:
        raise CommandError(f"no defense file at {path!r}") from None
    except Exception as exc:
        raise CommandError(f"could not load the defense {path!r}: {exc}") from exc


def _labeller(args):
    """Return ``(label_fn, input_shape, N)``: labels in ``0..N`` for a batch of raw images."""
    from sklearn.base import is_outlier_detector

    from .models import model_input_shape, model_n_classes, predict_proba_batches

    model = _load_model(args) if args.model else None
    defense = _load_defense(args.defense) if args.defense else None
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
        holder = getattr(defense, "badnet_", None) or getattr(defense, "model_", None) or model
        n_classes = model_n_classes(getattr(defense, "badnet_", None) or holder)
        return defense.predict, model_input_shape(holder), n_classes
    labels = lambda X: predict_proba_batches(model, X).argmax(axis=1)  # noqa: E731
    return labels, model_input_shape(model), model_n_classes(model)


def _predict(args):
    from .datasets import load_images

    label, shape, _ = _labeller(args)
    X = load_images(args.images, expected_shape=shape[:2], mode="L" if shape[2] == 1 else "RGB")
    for path, value in zip(args.images, label(X.astype(np.float32))):
        print(f"{path}\t{int(value)}" if args.show_paths else int(value))


def _evaluate(args):
    from .datasets import load_csaw_h5
    from .metrics import attack_success_rate, clean_accuracy_score

    label, _, poisoned_label = _labeller(args)
    X_clean, y_clean = load_csaw_h5(args.clean)
    clean_pred = np.asarray(label(X_clean))
    print(f"clean accuracy (CCA)\t{clean_accuracy_score(y_clean, clean_pred):.4f}")
    print(f"clean inputs flagged (FRR)\t{np.mean(clean_pred == poisoned_label):.4f}")
    if args.target is not None and len(args.target) != len(args.poisoned):
        raise CommandError("give one --target per --poisoned file")
    for index, path in enumerate(args.poisoned):
        X_poisoned, y_file = load_csaw_h5(path)
        targets = y_file if args.target is None else np.full(len(X_poisoned), args.target[index])
        predicted = np.asarray(label(X_poisoned))
        print(f"{path}: attack success rate (ASR)\t{attack_success_rate(targets, predicted):.4f}")
        print(f"{path}: poisoned inputs flagged\t{np.mean(predicted == poisoned_label):.4f}")


def _repair(args):
    import joblib

    from . import FinePruner, GoodNetClassifier
    from .datasets import load_csaw_h5
    from .models import model_to_bytes

    model = _load_model(args)
    X, y = load_csaw_h5(args.clean)
    pruner = FinePruner(
        model=model, layer=args.layer, prune_fraction=args.prune_fraction,
        max_accuracy_drop=args.max_accuracy_drop, epochs=args.epochs,
        learning_rate=args.learning_rate, random_state=args.random_state, verbose=1,
    )
    pruner.fit(X, y)
    goodnet = GoodNetClassifier(badnet=model, repaired=pruner).fit(X, y)
    joblib.dump(goodnet, args.output)
    print(f"pruned {len(pruner.pruned_channels_)} channels; GoodNet written to {args.output}")
    if args.save_model:
        with open(args.save_model, "wb") as handle:
            handle.write(model_to_bytes(pruner.model_))
        print(f"repaired model written to {args.save_model}")


def main(argv=None):
    """Entry point of the ``skbackdoor`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    handlers = {"predict": _predict, "evaluate": _evaluate, "repair": _repair}
    try:
        handlers[args.command](args)
    except (CommandError, FileNotFoundError, ValueError, TypeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skbackdoor: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
