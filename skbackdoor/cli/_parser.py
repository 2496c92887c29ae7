"""The argument parser of the ``skbackdoor`` command.

Nothing here imports TensorFlow, so that ``skbackdoor --help`` and ``--version`` answer
at once. The defaults of the options that set a defense's parameters are read from the
estimator's ``__init__`` in its source file (without importing it), so that ``--help``
shows the values the estimator really uses.
"""

import argparse
import ast
import importlib.util
from fractions import Fraction

from .. import __version__

UNSAFE = (
    "Loading a joblib file is as unsafe as pickle: it can execute arbitrary code. "
    "Only pass files you created or trust."
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show ``(default: ...)`` where there is a default worth showing; keep epilogs as written."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _init_defaults(module, class_name):
    """Keyword defaults of ``class_name.__init__`` in ``skbackdoor.<module>``, from its source."""
    try:
        spec = importlib.util.find_spec(f"skbackdoor.{module}")
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (ImportError, AttributeError, OSError, SyntaxError):
        return {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    defaults = {}
                    for argument, default in zip(item.args.kwonlyargs, item.args.kw_defaults):
                        try:
                            defaults[argument.arg] = ast.literal_eval(default)
                        except (ValueError, TypeError, SyntaxError):
                            pass
                    return defaults
    return {}


FINE_PRUNER_DEFAULTS = _init_defaults("_fine_pruning", "FinePruner")
NEURAL_CLEANSE_DEFAULTS = _init_defaults("_neural_cleanse", "NeuralCleanse")


def _number(text, option):
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number or a fraction such as 1/255 ({option})"
        ) from None


def _numbers(text, option):
    """One number, or one per channel separated by commas (``0.017,0.018,0.017``)."""
    values = [_number(part, option) for part in text.split(",")]
    return values[0] if len(values) == 1 else values


def scale(text):
    """``--input-scale``: a number (``0.00392156862745098``), a fraction (``1/255``), or
    one per channel separated by commas."""
    value = _numbers(text, "--input-scale")
    if not all(v > 0 for v in (value if isinstance(value, list) else [value])):
        raise argparse.ArgumentTypeError(f"the input scale must be positive, got {text!r}")
    return value


def offset(text):
    """``--input-offset``: a number, or one per channel separated by commas."""
    return _numbers(text, "--input-offset")


def label_list(text):
    """``--labels``: comma-separated labels and ranges, e.g. ``0,7,100-199``."""
    labels = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            start = int(first)
            stop = int(last) if last else start
            if start < 0 or stop < start:
                raise ValueError
            labels.extend(range(start, stop + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of labels such as 0,7,100-199 (non-negative, ranges low-high)"
        ) from None
    return sorted(set(labels))


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def rounds_or_auto(text):
    """A positive number of rounds, or "auto" (NeuralCleanse's choice from the clean set's size)."""
    if str(text) == "auto":
        return "auto"
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}") from None


def anomaly_threshold(text):
    """A non-negative z-score, or "auto" (NeuralCleanse's multiple-testing threshold)."""
    if str(text) == "auto":
        return "auto"
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or at least 0, got {text}")
    return value


def drop_or_none(text):
    """An accuracy drop in [0, 1], or "none" (FinePruner's fine-tuning check off)."""
    if str(text).lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be 'none' or a drop between 0 and 1, got {text}")
    return value


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true",
        help="show TensorFlow's own log lines (hidden by default), progress bars and Keras's "
        "per-epoch lines",
    )
    return common


def _model_options(*, required):
    group = argparse.ArgumentParser(add_help=False)
    group.add_argument(
        "--model", required=required, metavar="FILE",
        help="the BadNet: a .keras file, a full-model .h5 file, or a weights-only .h5 file "
        "together with --architecture",
    )
    group.add_argument(
        "--architecture", metavar="NAME",
        help="architecture of a weights-only .h5 file: csaw-deepid (the CSAW-HackML-2020 "
        "face classifier). Not needed for .keras or full-model .h5 files",
    )
    group.add_argument(
        "--input-scale", type=scale, metavar="SCALE",
        help="multiply raw pixels by SCALE before the network, for nets trained on scaled "
        "pixels: 1/255 for the CSAW-HackML-2020 nets except lab3 (a number or a fraction). "
        "Default: raw pixels. One number per channel, separated by commas, divides "
        "each channel by its own standard deviation: 1/58.4,1/57.1,1/57.4",
    )
    group.add_argument(
        "--input-offset", type=offset, metavar="OFFSET",
        help="subtract OFFSET from raw pixels before --input-scale, so the net gets "
        "(x - OFFSET) * SCALE: a number, or one per channel separated by commas (a "
        "per-channel mean such as 125.3,123.0,113.9). Default: none",
    )
    return group


def _add_clean_data_option(parser, *, what):
    """``--clean``: a CSAW .h5 file or a folder of images, as ``scan`` and ``repair`` read it."""
    parser.add_argument(
        "--clean", required=True, metavar="PATH",
        help=f"{what}: a CSAW .h5 file (images and true labels) or a folder of PNG/JPEG "
        "files (then the model's own predictions serve as labels)",
    )


def _add_options(group, options):
    """``group.add_argument(flag, help=help, **keywords)`` for each row of ``options``."""
    for flag, help, keywords in options:
        group.add_argument(flag, help=help, **keywords)


def _scan_options(parser, *, title):
    nc = NEURAL_CLEANSE_DEFAULTS
    _add_options(parser.add_argument_group(title), [
        ("--labels", "candidate target labels to scan, e.g. 0-99 or 0,5,17. Default: every class",
         {"type": label_list, "metavar": "LIST"}),
        ("--steps", "optimisation steps of the trigger search for each fully searched label",
         {"type": positive_int, "metavar": "N", "default": nc.get("steps")}),
        ("--screening", "first shortlist the labels with a short search of every label (auto: when "
         "there are more than 64 candidate labels, e.g. the 1,283 CSAW classes)",
         {"choices": ("auto", "on", "off"), "default": "auto"}),
        ("--candidates", "labels the screening keeps for the full search (plus as many random labels "
         "as a reference for the median)",
         {"type": positive_int, "metavar": "N", "default": nc.get("n_candidates")}),
        ("--screening-steps", "optimisation steps of the screening search",
         {"type": positive_int, "metavar": "N", "default": nc.get("screening_steps")}),
        ("--batch-size", "clean images per label in each step of the trigger search",
         {"type": positive_int, "metavar": "N", "default": nc.get("batch_size")}),
        ("--anomaly-threshold", "flag a label whose anomaly index (one-sided robust z-score of the log of its "
         "trigger's size) exceeds this; 'auto' corrects for the number of labels, 2 is the "
         "paper's per-label choice",
         {"type": anomaly_threshold, "metavar": "Z", "default": nc.get("anomaly_threshold")}),
        ("--max-images", "use at most the first N clean images. Default: all",
         {"type": positive_int, "metavar": "N"}),
    ])


def build_parser():
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="skbackdoor",
        description="Detect poisoned inputs and repair backdoored Keras image classifiers "
        "(CSAW-HackML-2020 style). Run 'skbackdoor COMMAND --help' for a command's options.",
        epilog=UNSAFE,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skbackdoor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, *, model_required, **texts):
        """A subcommand taking the common and the model options; ``texts``: its help,
        description and epilog."""
        return commands.add_parser(
            name, parents=[common, _model_options(required=model_required)], formatter_class=_HelpFormatter, **texts
        )

    # ------------------------------------------------------------------ scan
    scan = command(
        "scan", model_required=True,
        help="is this model backdoored, and towards which label? (Neural Cleanse)",
        description="Reverse-engineer, for each candidate label, the smallest trigger that "
        "sends clean images to it (Neural Cleanse, Wang et al., IEEE S&P 2019). A label "
        "whose trigger is much smaller than the others' is flagged as a backdoor target. "
        "Prints the verdict and the flagged labels; writes report.json and the reversed "
        "triggers as PNG files (trigger_LABEL.png: the pattern with the mask as alpha; "
        "triggered_LABEL.png: the first clean image with it applied). The model is not changed.",
        epilog="Example (CSAW-HackML-2020, 1,283 classes, screening on by itself):\n"
        "  skbackdoor scan --model sunglasses_bd_weights.h5 --architecture csaw-deepid \\\n"
        "      --input-scale 1/255 --clean clean_validation_data.h5 --output-dir scan/",
    )
    _add_clean_data_option(scan, what="clean images")
    scan.add_argument(
        "--output-dir", default="skbackdoor-scan", metavar="DIR",
        help="folder for report.json and the trigger PNG files (created if needed)",
    )
    _scan_options(scan, title="trigger search")
    scan.add_argument("--random-state", type=int, default=0, metavar="SEED", help="seed of the search")

    # ------------------------------------------------------------------ repair
    fp = FINE_PRUNER_DEFAULTS
    repair = command(
        "repair", model_required=True,
        help="repair a BadNet on clean data and save the GoodNet G(B, B')",
        description="Repair the BadNet B on clean data (Fine-Pruning or Neural Cleanse's "
        "unlearning) into B', and save with joblib a GoodNetClassifier G(B, B') that "
        "answers N (the number of classes, 'poisoned') where B and B' disagree.",
        epilog="Example (CSAW-HackML-2020):\n"
        "  skbackdoor repair --model sunglasses_bd_weights.h5 --architecture csaw-deepid \\\n"
        "      --input-scale 1/255 --clean clean_validation_data.h5 --layer conv_3 \\\n"
        "      --output goodnet.joblib",
    )
    _add_clean_data_option(repair, what="clean validation data")
    repair.add_argument("--output", required=True, metavar="FILE", help="where to write the fitted GoodNetClassifier (.joblib)")
    repair.add_argument("--save-model", metavar="FILE", help="also save the repaired network B' as a .keras file")
    repair.add_argument(
        "--defense", choices=("fine-pruning", "neural-cleanse"), default="fine-pruning",
        help="how B' is made: FinePruner (prune dormant channels, fine-tune) or "
        "NeuralCleanse (reverse-engineer the trigger, unlearn it)",
    )
    repair.add_argument(
        "--epochs", type=int, metavar="N",
        help=f"fine-tuning epochs. Default: the defense's own ({fp.get('epochs')} for "
        f"fine-pruning, {NEURAL_CLEANSE_DEFAULTS.get('epochs')} per unlearning round for neural-cleanse)",
    )
    repair.add_argument(
        "--learning-rate", type=float, metavar="RATE",
        help=f"learning rate of the fine-tuning (SGD for fine-pruning's fst/sgd/sam "
        f"recipes, Adam for plain and for neural-cleanse's unlearning). Default: the defense's own "
        f"({fp.get('learning_rate')}, {NEURAL_CLEANSE_DEFAULTS.get('learning_rate')})",
    )
    repair.add_argument(
        "--answer", choices=("auto", "repaired", "reference", "confident"), default="auto",
        help="whose label the GoodNet gives the inputs it does not flag: B' (repaired), B (reference), "
        "per input the surer of the two (confident), or auto (the default): B' where it is as accurate "
        "as B on the clean images held out for its threshold, else confident",
    )
    repair.add_argument("--random-state", type=int, default=0, metavar="SEED", help="seed of the fine-tuning, of the trigger search and of the images held out to calibrate the GoodNet")
    _add_options(repair.add_argument_group("fine-pruning"), [
        ("--layer", "convolution to prune. Default: the last convolution that can be split off "
         "and whose channels are not the class scores (conv_3 on the CSAW DeepID net, as in "
         "the paper and the CSAW-HackML reports)",
         {"metavar": "NAME"}),
        ("--fine-tuning", "fine-tuning recipe after pruning: fst (head re-initialised, alignment penalty), "
         "sgd, sam (sharpness-aware), plain (the paper's: Adam; pass --learning-rate 0.001 "
         "--epochs 10 for its settings), or lda (no training: the head re-fitted in closed form on the "
         "clean features; measured best with --prune-fraction 0)",
         {"choices": ("fst", "sgd", "sam", "plain", "lda"), "default": fp.get("fine_tuning")}),
        ("--prune-fraction", "fraction of the layer's channels to prune. Default: as many as "
         "--max-accuracy-drop allows",
         {"type": float, "metavar": "FRACTION", "default": fp.get("prune_fraction")}),
        ("--max-accuracy-drop", "prune while the clean accuracy stays within this drop of the BadNet's",
         {"type": float, "metavar": "DROP", "default": fp.get("max_accuracy_drop")}),
        ("--max-fine-tuning-drop", "check fst/sam first on 20 %% of --clean held out: when a copy loses "
         "more than this clean accuracy there, fine-tune with sgd instead (the head kept); 'none' "
         "turns the check off",
         {"type": drop_or_none, "metavar": "DROP", "default": fp.get("max_fine_tuning_drop")}),
    ])
    _scan_options(repair, title="neural-cleanse (the trigger search before unlearning)")
    _add_options(repair.add_argument_group("neural-cleanse (the repair)"), [
        ("--projection-rounds", "rounds of head projection before the unlearning fine-tuning: the reversed "
         "triggers' shift of the head's input is projected out of it, and the triggers that still work are "
         "searched again; 0: unlearning by fine-tuning only",
         {"type": non_negative_int, "metavar": "N", "default": NEURAL_CLEANSE_DEFAULTS.get("projection_rounds")}),
        ("--unlearning-rounds", "rounds of unlearning fine-tuning; before each after the first, the unlearned "
         "labels' triggers are searched again on the partly repaired model; auto: 3 with at least 20 clean "
         "images per class on average, else 1",
         {"type": rounds_or_auto, "metavar": "N", "default": NEURAL_CLEANSE_DEFAULTS.get("unlearning_rounds")}),
        ("--unlearn-labels", "whose reversed triggers are unlearned: the flagged labels, every scanned "
         "label whatever the test says (for backdoors with no single target, e.g. all-to-all; use with "
         "--projection-rounds 0 --unlearning-rounds 3), or none but the untargeted trigger, the smallest "
         "that moves clean images off their own label, searched before every round (also for backdoors "
         "with no single target)",
         {"choices": ("flagged", "all", "untargeted"), "default": NEURAL_CLEANSE_DEFAULTS.get("unlearn_labels")}),
    ])

    # ------------------------------------------------------------------ predict
    predict = command(
        "predict", model_required=False,
        help="print one label per image (N = poisoned)",
        description="Print one label per image: its class 0..N-1, or N (the number of "
        "classes) when the defense judges it poisoned (the CSAW-HackML-2020 format). "
        "With --model alone, the model's own label.",
        epilog="Example:\n  skbackdoor predict --defense goodnet.joblib faces/\n\n" + UNSAFE,
    )
    predict.add_argument(
        "--defense", metavar="FILE",
        help="a joblib file of a fitted defense written by skbackdoor (repair's --output, or "
        "joblib.dump of a GoodNetClassifier, FinePruner, NeuralCleanse or STRIPDetector; "
        "a STRIPDetector needs --model or its own). " + UNSAFE,
    )
    predict.add_argument("--show-paths", action="store_true", help="print 'PATH<TAB>LABEL' instead of the label alone")
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help=f"image files, or folders of them ({', '.join(IMAGE_SUFFIXES)}), at the model's input size",
    )

    # ------------------------------------------------------------------ evaluate
    evaluate = command(
        "evaluate", model_required=False,
        help="clean accuracy, attack success and detection rates on CSAW .h5 files",
        description="Print the clean accuracy (CCA) and the share of clean inputs flagged "
        "(FRR) on --clean, and for each --poisoned file the attack success rate (ASR) and the "
        "share flagged.",
        epilog="Example:\n  skbackdoor evaluate --defense goodnet.joblib --clean clean_test_data.h5 \\\n"
        "      --poisoned sunglasses_poisoned_data.h5 --target 0\n\n" + UNSAFE,
    )
    evaluate.add_argument("--defense", metavar="FILE", help="a joblib file of a fitted defense written by skbackdoor. " + UNSAFE)
    evaluate.add_argument("--clean", required=True, metavar="H5", help="CSAW .h5 file of clean images and their true labels")
    evaluate.add_argument(
        "--poisoned", action="append", default=[], metavar="H5",
        help="CSAW .h5 file of poisoned images (repeatable)",
    )
    evaluate.add_argument(
        "--target", type=int, action="append", metavar="LABEL",
        help="the attacker's target label, once per --poisoned file. Default: the labels "
        "stored in each file",
    )
    return parser
