"""The benchmark matrix of the repairs: BadNets on four real data sets, trained once and cached.

Every repair benchmark (``bench_repair.py``) evaluates the same BadNets, listed in
:data:`ZOO`. The matrix is split in two halves, stated per net in ``half``:

- ``"tuning"``: the defaults of the repairs are chosen on these nets only;
- ``"report"``: the nets the defaults are reported on, never used to choose them.

Each attack or architecture property appears in both halves (on different data
sets), so a default chosen on the tuning half meets every property again, unseen, on
the report half.

Data and splits (all arrays uint8, raw 0-255 pixels; every net takes raw pixels through
a ``Rescaling(1/255)`` layer named ``input_scale``):

- Fashion-MNIST (Debian's ``dataset-fashion-mnist``): the attacker trains on 20,000
  images drawn, stratified by class, from the 60,000 training images; the defender's
  clean set is 1,000 images (5 % of the attacker's set) drawn stratified from the
  10,000 test images; the other 9,000 test images are the evaluation set.
- MNIST (``../shared/data/mnist``: the 10,000 test digits plus the 5,000 training
  digits, pooled), GTSRB (``gtsrb_test_32x32.npz``, the 12,630 Final_Test images, 43
  classes, whole image resized to 32x32) and CIFAR-10 (``cifar10_test_jpeg.npz``, the
  10,000 test images, JPEG-decoded): each pool is split, stratified by class, into the
  attacker's training set, the defender's clean set (5 % of the attacker's set) and the
  evaluation set (the rest); sizes in :data:`SPLITS`.

All splits come from ``numpy.random.default_rng(SPLIT_SEED)``; the defender's set never
overlaps the attacker's training set or the evaluation set. Poisoned evaluation images
are the evaluation images not of the target class with the trigger stamped on
(all-to-all: every evaluation image, target ``(y + 1) mod n_classes``).

Training is deterministic on one machine, not across machines: the nets re-trained on a
fresh machine on 2026-12-01 differ from the earlier ones (gtsrb-multi-target: CCA 94.0 %
against 97.1 %; fmnist-patch-1pct: 88.1 % against 88.0 %). So the nets every benchmark
evaluates are pinned: ``benchmarks/zoo/`` (committed, about 4 MB) holds each net as
``<name>.keras`` (weights only, no optimizer state) with ``<name>.json`` (the BadNet's
CCA / ASR on the evaluation set, its training time and where it was trained), and
:func:`load` reads a pinned net before anything else. Compare results of different
runs by their BadNet CCA / ASR, which every row of the reports carries.

Nets not pinned are trained and cached as ``<name>.keras`` / ``<name>.json`` in the cache
folder: ``cache_dir=`` or the environment variable ``SKBACKDOOR_ZOO_CACHE``, else
``benchmarks/.cache/zoo`` (ignored by git). ``python benchmarks/_zoo.py [--names ...]
[--ready-file PATH]`` trains the missing ones, one after the other, and lists the nets
in the ready file as they are done; ``--pin`` then copies the cached nets into
``benchmarks/zoo/`` (replacing pinned ones: do that only on purpose, and re-run the
reports that quote them).

Use::

    from _zoo import ZOO, load, names
    net = load("fmnist-patch")     # trains and caches it when missing
    net.model, net.X_clean, net.y_clean, net.X_test, net.y_test, net.X_poisoned, net.y_target
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache" / "zoo"
PINNED = Path(__file__).resolve().parent / "zoo"
SPLIT_SEED = 0
TRAIN_SEED = 0

# (attacker's training set, defender's clean set); the evaluation set is the rest of the pool.
SPLITS = {
    "fmnist": (20000, 1000),
    "mnist": (10000, 500),
    "gtsrb": (8500, 425),
    "cifar10": (7000, 350),
}


@dataclass(frozen=True)
class BadNetSpec:
    """One BadNet of the matrix."""

    name: str
    half: str  # "tuning" or "report"
    dataset: str
    attack: str  # patch | blend | multi-target | pruning-aware | all-to-all
    architecture: str = "small"  # small | batchnorm | nin
    poison_rate: float = 0.1
    epochs: int = 6
    notes: str = ""
    extra: dict = field(default_factory=dict)


ZOO = {
    spec.name: spec
    for spec in [
        # ---- tuning half: defaults are chosen on these
        BadNetSpec("fmnist-patch-1pct", "tuning", "fmnist", "patch", poison_rate=0.01,
                   notes="4x4 white patch, 1 % poisoning"),
        BadNetSpec("mnist-blend-bn", "tuning", "mnist", "blend", architecture="batchnorm",
                   notes="noise blended at alpha 0.15; Conv-BN-ReLU net"),
        BadNetSpec("gtsrb-multi-target", "tuning", "gtsrb", "multi-target", epochs=12,
                   notes="white square -> 0, checkerboard -> 1, 10 % each"),
        BadNetSpec("mnist-all-to-all", "tuning", "mnist", "all-to-all", poison_rate=0.2, epochs=15,
                   notes="4x4 white patch, label i -> i+1, 20 % poisoning"),
        BadNetSpec("cifar10-patch-nin", "tuning", "cifar10", "patch", architecture="nin", epochs=12,
                   notes="4x4 checkerboard; network-in-network, 1x1-conv head + global pooling"),
        BadNetSpec("gtsrb-pruning-aware", "tuning", "gtsrb", "pruning-aware", epochs=12,
                   notes="Liu et al.'s attack, 4x4 checkerboard"),
        # ---- report half: defaults are reported on these, never chosen on them
        BadNetSpec("gtsrb-patch", "report", "gtsrb", "patch", epochs=12,
                   notes="4x4 checkerboard, 43 classes (the timing net)"),
        BadNetSpec("fmnist-blend", "report", "fmnist", "blend", notes="noise blended at alpha 0.15"),
        BadNetSpec("mnist-patch-1pct", "report", "mnist", "patch", poison_rate=0.01,
                   notes="4x4 white patch, 1 % poisoning"),
        BadNetSpec("cifar10-multi-target-bn", "report", "cifar10", "multi-target",
                   architecture="batchnorm", epochs=8,
                   notes="white square -> 0, checkerboard -> 1; Conv-BN-ReLU net"),
        BadNetSpec("gtsrb-patch-nin", "report", "gtsrb", "patch", architecture="nin", epochs=10,
                   notes="4x4 checkerboard; network-in-network, 1x1-conv head + global pooling"),
        BadNetSpec("fmnist-all-to-all", "report", "fmnist", "all-to-all", poison_rate=0.2, epochs=15,
                   notes="4x4 white patch, label i -> i+1, 20 % poisoning"),
        BadNetSpec("mnist-pruning-aware", "report", "mnist", "pruning-aware",
                   notes="Liu et al.'s attack, 4x4 white patch"),
    ]
}


def names(half=None):
    """Names of the matrix's BadNets, of one half (``"tuning"`` / ``"report"``) or all."""
    return [name for name, spec in ZOO.items() if half is None or spec.half == half]


def cache_dir(path=None):
    return Path(path or os.environ.get("SKBACKDOOR_ZOO_CACHE") or DEFAULT_CACHE)


# --------------------------------------------------------------------------- data


def _stratified_split(y, sizes, rng):
    """Row indices of consecutive parts of the given sizes, each stratified by class."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    parts = []
    for size in sizes:
        if size >= len(rows):
            parts.append(rows)
            rows = rows[:0]
            break
        taken, rows = train_test_split(
            rows, train_size=size, stratify=y[rows], random_state=int(rng.integers(2**31 - 1))
        )
        parts.append(np.sort(taken))
    parts.append(np.sort(rows))
    return parts


@lru_cache(maxsize=None)
def dataset(name):
    """``(X_attacker, y_attacker, X_clean, y_clean, X_test, y_test, n_classes)`` of a data set."""
    rng = np.random.default_rng(SPLIT_SEED)
    n_train, n_clean = SPLITS[name]
    if name == "fmnist":
        from skbackdoor.datasets import load_fashion_mnist

        X_tr, y_tr = load_fashion_mnist(kind="train")
        X_te, y_te = load_fashion_mnist(kind="test")
        X_tr, X_te = X_tr.reshape(-1, 28, 28, 1), X_te.reshape(-1, 28, 28, 1)
        attacker, _ = _stratified_split(y_tr, [n_train], rng)
        clean, test = _stratified_split(y_te, [n_clean], rng)
        parts = (X_tr[attacker], y_tr[attacker], X_te[clean], y_te[clean], X_te[test], y_te[test])
        n_classes = 10
    else:
        if name == "mnist":
            a = np.load(SHARED_DATA / "mnist" / "mnist_test.npz")
            b = np.load(SHARED_DATA / "mnist" / "mnist_train_5k.npz")
            X = np.concatenate([a["x"], b["x"]])[..., np.newaxis]
            y = np.concatenate([a["y"], b["y"]])
            n_classes = 10
        elif name == "gtsrb":
            data = np.load(SHARED_DATA / "gtsrb" / "gtsrb_test_32x32.npz")
            X, y, n_classes = data["x"], data["y"], 43
        elif name == "cifar10":
            data = np.load(SHARED_DATA / "cifar10" / "cifar10_test_jpeg.npz")
            X, y, n_classes = data["x"], data["y"], 10
        else:
            raise ValueError(f"Unknown data set {name!r}; known: {sorted(SPLITS)}.")
        attacker, clean, test = _stratified_split(y, [n_train, n_clean], rng)
        parts = (X[attacker], y[attacker], X[clean], y[clean], X[test], y[test])
    X_a, y_a, X_c, y_c, X_t, y_t = parts
    as_int = lambda labels: np.asarray(labels, dtype=np.int64)  # noqa: E731
    return (np.asarray(X_a, np.uint8), as_int(y_a), np.asarray(X_c, np.uint8), as_int(y_c),
            np.asarray(X_t, np.uint8), as_int(y_t), n_classes)


# --------------------------------------------------------------------------- attacks


def triggers(spec, image_shape):
    """The attack's triggers and targets (``targets`` is ``"next"`` for all-to-all)."""
    from skbackdoor.attacks import BlendTrigger, PatchTrigger

    gray = image_shape[-1] == 1
    square = PatchTrigger.square(size=4, value=255, location="bottom-right")
    checker = PatchTrigger.checkerboard(size=4, location="bottom-right")
    if spec.attack == "blend":
        return [BlendTrigger.random_noise(image_shape, alpha=0.15, random_state=1)], [0]
    if spec.attack == "multi-target":
        return [square, PatchTrigger.checkerboard(size=4, location="top-left")], [0, 1]
    if spec.attack == "all-to-all":
        return [square], "next"
    return [square if gray else checker], [0]


def poisoned_eval_set(spec, X, y, n_classes):
    """Triggered evaluation images and the attacker's targets (for the ASR)."""
    from skbackdoor.attacks import make_poisoned_test_set

    trigger_list, targets = triggers(spec, X.shape[1:])
    if targets == "next":
        return trigger_list[0].apply(X), (y + 1) % n_classes
    return make_poisoned_test_set(X, y, trigger_list, targets)


# --------------------------------------------------------------------------- networks


def build(architecture, input_shape, n_classes):
    """An uncompiled net taking raw 0-255 pixels."""
    import keras
    from keras import layers

    from skbackdoor.attacks import small_cnn

    if architecture == "small":
        filters = (16, 32) if input_shape[-1] == 1 else (32, 64)
        return small_cnn(input_shape, n_classes, input_scale=1 / 255, filters=filters)
    inputs = keras.Input(input_shape, name="pixels")
    x = layers.Rescaling(1 / 255, name="input_scale")(inputs)
    if architecture == "batchnorm":
        for k, n in enumerate((16, 32) if input_shape[-1] == 1 else (32, 64), start=1):
            x = layers.Conv2D(n, 3, padding="same", use_bias=False, name=f"conv_{k}")(x)
            x = layers.BatchNormalization(name=f"bn_{k}")(x)
            x = layers.ReLU(name=f"relu_{k}")(x)
            x = layers.MaxPooling2D(2, name=f"pool_{k}")(x)
        x = layers.Flatten(name="flatten")(x)
        outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
        return keras.Model(inputs, outputs, name="bn_cnn")
    if architecture == "nin":
        x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1")(x)
        x = layers.MaxPooling2D(2, name="pool_1")(x)
        x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_2")(x)
        x = layers.MaxPooling2D(2, name="pool_2")(x)
        x = layers.Conv2D(64, 1, activation="relu", name="mlpconv")(x)
        x = layers.Conv2D(n_classes, 1, name="classifier")(x)
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
        outputs = layers.Softmax(name="output")(x)
        return keras.Model(inputs, outputs, name="nin")
    raise ValueError(f"Unknown architecture {architecture!r}.")


def _train(spec, X, y, n_classes):
    import keras

    from skbackdoor.attacks import pruning_aware_badnet, train_badnet

    model = lambda shape, k: build(spec.architecture, shape, k)  # noqa: E731
    trigger_list, targets = triggers(spec, X.shape[1:])
    common = dict(batch_size=128, learning_rate=2e-3, n_classes=n_classes, input_scale=None,
                  random_state=TRAIN_SEED, model=model)
    if spec.attack == "pruning-aware":
        return pruning_aware_badnet(X, y, trigger=trigger_list[0], target=targets[0],
                                    poison_rate=spec.poison_rate, clean_epochs=spec.epochs,
                                    backdoor_epochs=max(2, spec.epochs // 2), **common)
    if targets != "next":
        single = len(trigger_list) == 1
        return train_badnet(X, y, trigger=trigger_list[0] if single else trigger_list,
                            target=targets[0] if single else targets, poison_rate=spec.poison_rate,
                            epochs=spec.epochs, **common)
    # All-to-all: a share of the images carries the trigger and is relabelled y + 1.
    rng = np.random.default_rng(TRAIN_SEED)
    chosen = rng.choice(len(X), size=int(round(spec.poison_rate * len(X))), replace=False)
    X_p, y_p = X.copy(), y.copy()
    X_p[chosen] = trigger_list[0].apply(X[chosen])
    y_p[chosen] = (y[chosen] + 1) % n_classes
    keras.utils.set_random_seed(TRAIN_SEED)
    net = model(X.shape[1:], n_classes)
    net.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    net.fit(X_p.astype(np.float32), y_p, epochs=spec.epochs, batch_size=128, shuffle=True, verbose=0)
    return net


def evaluate(model, X_test, y_test, X_poisoned, y_target):
    """``(CCA, ASR)`` in percent."""
    from skbackdoor.models import predict_proba_batches

    cca = 100 * float(np.mean(predict_proba_batches(model, X_test).argmax(1) == y_test))
    asr = 100 * float(np.mean(predict_proba_batches(model, X_poisoned).argmax(1) == y_target))
    return cca, asr


def load(name, *, cache=None, train_missing=True, log=print):
    """The BadNet ``name`` and its data, training and caching it when it is missing.

    Returns
    -------
    net : SimpleNamespace
        ``name``, ``spec`` (:class:`BadNetSpec`), ``half``, ``model`` (keras.Model),
        ``n_classes``, ``X_clean`` / ``y_clean`` (the defender's clean set),
        ``X_test`` / ``y_test`` (clean evaluation set), ``X_poisoned`` / ``y_target``
        (triggered evaluation images, for the ASR), ``badnet_cca`` / ``badnet_asr`` (%)
        and ``train_seconds``. Images are float32 raw pixels 0-255.
    """
    import keras

    spec = ZOO[name]
    folder = _folder_of(name, cache)
    path, meta_path = folder / f"{name}.keras", folder / f"{name}.json"
    X_a, y_a, X_c, y_c, X_t, y_t, n_classes = dataset(spec.dataset)
    X_p, y_target = poisoned_eval_set(spec, X_t, y_t, n_classes)
    if path.exists() and meta_path.exists():
        model = keras.saving.load_model(path, compile=False)
        meta = json.loads(meta_path.read_text())
    elif not train_missing:
        raise FileNotFoundError(f"{path} is not cached; run `python benchmarks/_zoo.py --names {name}`.")
    else:
        log(f"training {name} ({len(X_a)} images, {spec.epochs} epochs) ...")
        start = time.perf_counter()
        model = _train(spec, X_a, y_a, n_classes)
        seconds = time.perf_counter() - start
        cca, asr = evaluate(model, X_t, y_t, X_p, y_target)
        meta = dict(name=name, half=spec.half, dataset=spec.dataset, attack=spec.attack,
                    architecture=spec.architecture, poison_rate=spec.poison_rate,
                    notes=spec.notes, n_attacker=len(X_a), n_clean=len(X_c), n_test=len(X_t),
                    n_poisoned_test=len(X_p), badnet_cca=round(cca, 2), badnet_asr=round(asr, 2),
                    train_seconds=round(seconds, 1))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.keras"
        model.save(tmp)
        os.replace(tmp, path)
        meta_path.write_text(json.dumps(meta, indent=1))
        log(f"  {name}: CCA {cca:.1f} %, ASR {asr:.1f} %, {seconds:.0f} s")
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return SimpleNamespace(
        name=name, spec=spec, half=spec.half, model=model, n_classes=n_classes,
        X_clean=f32(X_c), y_clean=y_c, X_test=f32(X_t), y_test=y_t,
        X_poisoned=f32(X_p), y_target=np.asarray(y_target, dtype=np.int64),
        badnet_cca=meta["badnet_cca"], badnet_asr=meta["badnet_asr"],
        train_seconds=meta["train_seconds"],
    )


def _stored(name, folder):
    return (folder / f"{name}.keras").exists() and (folder / f"{name}.json").exists()


def _folder_of(name, cache=None):
    """Where :func:`load` reads ``name`` from: the pinned nets first, then the cache."""
    return PINNED if _stored(name, PINNED) else cache_dir(cache)


def cached_names(cache=None):
    """Names of the matrix's BadNets that :func:`load` reads without training (pinned or cached)."""
    return [name for name in ZOO if _stored(name, PINNED) or _stored(name, cache_dir(cache))]


def pin(names, cache=None, log=print):
    """Copy cached nets into :data:`PINNED`, without their optimizer state, with where they were trained."""
    import platform

    import keras

    PINNED.mkdir(exist_ok=True)
    for name in names:
        folder = cache_dir(cache)
        if not _stored(name, folder):
            raise FileNotFoundError(f"{name} is not cached in {folder}: train it first.")
        model = keras.saving.load_model(folder / f"{name}.keras", compile=False)
        model.save(PINNED / f"{name}.keras")
        meta = json.loads((folder / f"{name}.json").read_text())
        meta["trained_on"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        meta["pinned"] = time.strftime("%Y-%m-%d", time.gmtime())
        (PINNED / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        log(f"pinned {name}: CCA {meta['badnet_cca']} %, ASR {meta['badnet_asr']} %")


def write_ready_file(path, cache=None):
    lines = ["# BadNets of benchmarks/_zoo.py, pinned (benchmarks/zoo) or cached in " + str(cache_dir(cache)),
             "# name half dataset attack architecture badnet_cca badnet_asr train_seconds"]
    for name in cached_names(cache):
        folder = _folder_of(name, cache)
        m = json.loads((folder / f"{name}.json").read_text())
        lines.append(f"{name} {m['half']} {m['dataset']} {m['attack']} {m['architecture']} "
                     f"{m['badnet_cca']} {m['badnet_asr']} {m['train_seconds']}")
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="*", default=list(ZOO))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--pin", action="store_true",
                        help="copy the cached nets --names into benchmarks/zoo/ instead of training")
    args = parser.parse_args(argv)
    if args.pin:
        return pin(args.names, args.cache_dir)
    for name in args.names:
        load(name, cache=args.cache_dir)
        if args.ready_file:
            write_ready_file(args.ready_file, args.cache_dir)
        sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
