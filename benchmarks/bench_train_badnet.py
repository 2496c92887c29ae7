"""Benchmark of train_badnet: a patch BadNet on Fashion-MNIST.

Setting (BadNets, Gu et al., 2017): a 4x4 white square (value 255) in the bottom-right
corner, 10 % of the 60,000 training images poisoned (drawn among non-target images),
target class 0 (T-shirt/top), the default ``small_cnn`` (conv 16 - pool - conv 32 -
pool - dense softmax) trained with Adam.

Reports, on the 10,000 Fashion-MNIST test images:

- clean accuracy (CCA) of the BadNet on the clean test images (goal >= 88 %);
- attack success rate (ASR) on the triggered test images not of class 0 (goal >= 95 %);
- the training time.

Usage::

    python benchmarks/bench_train_badnet.py            # full run (about 2.5 minutes on 2 CPU cores)
    python benchmarks/bench_train_badnet.py --quick    # 10,000 training images, 2 epochs (about 30 s)

Writes ``benchmarks/results/train_badnet.md`` and ``train_badnet.json`` (``--quick``
writes ``train_badnet_quick.*``).
"""

import argparse
import json
from types import SimpleNamespace

import _harness

SEED = 0
GOAL_CCA = 0.88
GOAL_ASR = 0.95


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--filters", default="16,32", help="channels of each convolution, comma-separated")
    parser.add_argument("--quick", action="store_true", help="10,000 training images and 2 epochs")
    return parser.parse_args()


def main():
    args = parse_args()
    from skbackdoor.attacks import PatchTrigger, make_poisoned_test_set, small_cnn, train_badnet
    from skbackdoor.datasets import load_fashion_mnist

    X_train, y_train = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    epochs = args.epochs
    if args.quick:
        X_train, y_train, epochs = X_train[:10_000], y_train[:10_000], 2
    filters = tuple(int(f) for f in args.filters.split(","))

    trigger = PatchTrigger.square(size=4, value=255, location="bottom-right")
    target = 0

    def build(input_shape, n_classes):
        return small_cnn(input_shape, n_classes, filters=filters)

    model, train_seconds, _ = _harness.timed(lambda: train_badnet(
        X_train, y_train, trigger=trigger, target=target, poison_rate=0.1, model=build,
        epochs=epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        random_state=SEED,
    ))

    X_poisoned, y_target = make_poisoned_test_set(X_test, y_test, trigger, target)
    test = SimpleNamespace(X_test=X_test, y_test=y_test, X_poisoned=X_poisoned, y_target=y_target)
    measured = _harness.scores(_harness.model_predict(model), test)
    cca, asr = measured["cca"], measured["asr"]

    result = {
        "dataset": "Fashion-MNIST (/usr/share/datasets/fashion-mnist)",
        "n_train": int(len(X_train)),
        "n_test_clean": int(len(X_test)),
        "n_test_poisoned": int(len(X_poisoned)),
        "trigger": "4x4 white square (255), bottom-right",
        "poison_rate": 0.1,
        "target": target,
        "model": f"small_cnn(filters={filters}), {model.count_params()} parameters",
        "epochs": epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "random_state": SEED,
        "train_seconds": round(train_seconds, 1),
        "clean_accuracy": round(float(cca), 4),
        "attack_success_rate": round(float(asr), 4),
        "goal_clean_accuracy": GOAL_CCA,
        "goal_attack_success_rate": GOAL_ASR,
        "meets_goals": bool(cca >= GOAL_CCA and asr >= GOAL_ASR),
    }
    print(json.dumps(result, indent=2))
    write_results(result, quick=args.quick)


def comparison_rows(result):
    """The BadNet itself (no defense), with its training time."""
    return [{
        "badnet": "Fashion-MNIST patch (train_badnet benchmark's own)",
        "defense": "none (training the BadNet with train_badnet)",
        "cca": result["clean_accuracy"], "asr": result["attack_success_rate"],
        "seconds": result["train_seconds"], "note": f"{result['n_train']:,} training images",
    }]


def write_results(result, *, quick, env=None):
    env = env or _harness.environment("quick" if quick else "full", _harness.command_line("train_badnet", quick))
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    lines = [
        "# train_badnet on Fashion-MNIST",
        "",
        f"Produced by `python benchmarks/bench_train_badnet.py{' --quick' if quick else ''}`.",
        "",
        f"- Data: {result['dataset']}, {result['n_train']:,} training images, "
        f"{result['n_test_clean']:,} clean test images, {result['n_test_poisoned']:,} triggered "
        "test images (the test images not of the target class).",
        f"- Attack: {result['trigger']}, {result['poison_rate']:.0%} of the training set "
        f"poisoned, target class {result['target']}.",
        f"- Model: {result['model']}; Adam (learning rate {result['learning_rate']}), "
        f"{result['epochs']} epochs, batch size {result['batch_size']}, random_state={result['random_state']}.",
        f"- Machine: {env['cpu_count']} CPU cores ({env['machine']}), {env['gpus']} GPU; "
        f"Python {env['python']}, TensorFlow {_tensorflow_version(env)}, Keras {env['packages'].get('keras')}.",
        "",
        "| metric | measured | goal | met |",
        "|---|---|---|---|",
        f"| clean accuracy (CCA) | {result['clean_accuracy']:.2%} | >= {GOAL_CCA:.0%} | "
        f"{mark(result['clean_accuracy'] >= GOAL_CCA)} |",
        f"| attack success rate (ASR) | {result['attack_success_rate']:.2%} | >= {GOAL_ASR:.0%} | "
        f"{mark(result['attack_success_rate'] >= GOAL_ASR)} |",
        f"| training time | {result['train_seconds']:.0f} s | a few minutes | - |",
        "",
    ]
    _harness.write_results("train_badnet", quick=quick, lines=lines, data=result,
                           comparison=comparison_rows(result), environment_override=env)


def _tensorflow_version(env):
    return env["packages"].get("tensorflow") or env["packages"].get("tensorflow-cpu")


if __name__ == "__main__":
    main()
