"""What the commands read: the model, a defense file, clean data, output paths.

Each function turns a user mistake into a :class:`CommandError` whose message names the
file and the fix, before any long work starts.
"""

from pathlib import Path

import numpy as np

from ._parser import IMAGE_SUFFIXES


class CommandError(Exception):
    """A user error reported as one line on stderr with exit status 2."""


DEFENSE_CLASSES = ("GoodNetClassifier", "FinePruner", "NeuralCleanse", "STRIPDetector")

# The first bytes of files that are not joblib/pickle files but are passed by mistake.
_MAGIC = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (a Keras .h5 model or a CSAW data file); pass a model with --model",
    b"PK\x03\x04": "a zip archive (a .keras model?); pass a model with --model",
    b"\x89PNG": "a PNG image",
}


def load_model(args):
    from ..models import load_badnet

    return load_badnet(
        args.model, architecture=args.architecture, input_scale=args.input_scale,
        input_offset=args.input_offset,
    )


def load_defense(path):
    """Load a fitted skbackdoor defense from a joblib file, or say what the file is."""
    import joblib
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from .. import FinePruner, GoodNetClassifier, NeuralCleanse, STRIPDetector

    path = Path(path)
    if not path.exists():
        raise CommandError(f"no defense file at '{path}'")
    if path.is_dir():
        raise CommandError(f"'{path}' is a directory; --defense takes a .joblib file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise CommandError(f"'{path}' is not a joblib file written by skbackdoor: it is {what}")
    try:
        defense = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 (unpickling raises anything: KeyError for a bad opcode, ...)
        raise CommandError(
            f"'{path}' is not a joblib file written by skbackdoor (joblib.dump of a fitted "
            f"{', '.join(DEFENSE_CLASSES)}): it could not be unpickled "
            f"({type(exc).__name__}: {str(exc)[:80] or 'no detail'})"
        ) from None
    if not isinstance(defense, (GoodNetClassifier, FinePruner, NeuralCleanse, STRIPDetector)):
        raise CommandError(
            f"'{path}' holds a {type(defense).__module__}.{type(defense).__qualname__}, not a "
            f"skbackdoor defense ({', '.join(DEFENSE_CLASSES)}); save one with joblib.dump "
            "after fit, or use 'skbackdoor repair --output'"
        )
    try:
        check_is_fitted(defense)
    except NotFittedError:
        raise CommandError(f"'{path}' holds an unfitted {type(defense).__name__}; fit it before joblib.dump") from None
    return defense


def image_paths(items):
    """Expand folders into their image files (sorted by name); keep files as given."""
    paths = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CommandError(f"the folder '{item}' holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def _channel_mode(input_shape):
    return "L" if input_shape[-1] == 1 else "RGB"


def load_image_batch(items, input_shape):
    from ..datasets import load_images

    paths = image_paths(items)
    X = load_images(paths, expected_shape=tuple(input_shape[:2]), mode=_channel_mode(input_shape))
    return paths, X.astype(np.float32)


def check_input_shape(X, input_shape, source):
    """Say, with both shapes, when images do not fit the model's input."""
    expected = tuple(None if size is None else int(size) for size in input_shape)
    found = tuple(int(size) for size in X.shape[1:])
    if len(found) != len(expected) or any(want is not None and got != want for got, want in zip(found, expected)):
        raise CommandError(
            f"{source} holds images of shape {found} (height, width, channels) but the model "
            f"takes {expected}; give data of the model's input size"
        )


def check_label_range(y, n_classes, source):
    """Labels of a data file must be classes of the model: ``0 .. n_classes - 1``."""
    bad = np.unique(y[(y < 0) | (y >= n_classes)])
    if bad.size:
        shown = ", ".join(str(int(label)) for label in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise CommandError(
            f"{source} has labels outside the model's classes 0..{n_classes - 1} "
            f"({n_classes} classes): {shown}. Is it the data of another model?"
        )


def load_clean(path, model, *, max_images=None):
    """Clean data for scan/repair: ``(X, y, source_of_labels)`` from a CSAW .h5 file or a folder."""
    from ..datasets import load_csaw_h5
    from ..models import model_input_shape, model_n_classes, predict_proba_batches

    path = Path(path)
    input_shape = model_input_shape(model)
    n_classes = model_n_classes(model)
    if path.is_dir():
        _, X = load_image_batch([path], input_shape)
        X = X[:max_images]
        y = predict_proba_batches(model, X).argmax(axis=1)
        return X, y, "the model's own predictions (a folder of images has no labels)"
    X, y = load_csaw_h5(path)
    X, y = X[:max_images], y[:max_images]
    check_input_shape(X, input_shape, f"'{path}'")
    check_label_range(y, n_classes, f"'{path}'")
    return X, y, f"the labels stored in '{path}'"


def check_output_file(path, option, example):
    """Refuse an output path that cannot be written, before the work that fills it."""
    path = Path(path)
    if path.is_dir():
        raise CommandError(f"{option} '{path}' is a directory; give a file name, e.g. '{path / example}'")
    if not path.parent.is_dir():
        raise CommandError(f"{option} '{path}': the folder '{path.parent}' does not exist")


def check_output_dir(path, option):
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"{option} '{path}' exists and is not a folder")
    if not path.exists() and not path.parent.is_dir():
        raise CommandError(f"{option} '{path}': the folder '{path.parent}' does not exist")
