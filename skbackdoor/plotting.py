"""Figures for backdoor defenses (needs matplotlib: ``pip install "skbackdoor[plot]"``).

- :func:`plot_entropy_histogram`: STRIP entropy histograms of clean and poisoned
  inputs with the detection threshold, the figure of the STRIP paper and of the
  CSAW-HackML-2020 reports.

Every function draws on ``ax`` (a new figure when ``None``) and returns the axes, so
figures compose with the rest of a matplotlib workflow. matplotlib is imported only
when a function is called: the package works without it.
"""

import numpy as np

from ._docstrings import fill_doc

__all__ = ["plot_entropy_histogram"]

# What the functions' docstrings share: the last parameters and the return value of
# those drawing on one Axes, the parameter of those drawing a whole figure, and the
# opening of every example (a backend that needs no display).
_ON_AX = """\
title : str, default=None
    Axes title.
ax : matplotlib Axes, default=None
    Where to draw; a new figure when ``None``.

Returns
-------
ax : matplotlib Axes
"""
_FIG = """\
fig : matplotlib Figure, default=None
    Where to draw; a new figure when ``None``.
"""
_EXAMPLES = """\
Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
"""
_documented = fill_doc(on_ax=_ON_AX, fig=_FIG, examples=_EXAMPLES)


def _import_pyplot():
    """Return ``matplotlib.pyplot``, or raise an ImportError naming the ``plot`` extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "skbackdoor.plotting needs matplotlib, which is not installed. Install it "
            'with: pip install "skbackdoor[plot]" (or pip install matplotlib).'
        ) from exc
    return plt


def _axes(ax):
    if ax is not None:
        return ax
    plt = _import_pyplot()
    _, ax = plt.subplots()
    return ax


def _label(ax, xlabel, ylabel, title):
    """Name the axes, add the title (when not None) and the legend; return ``ax``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend()
    return ax


def _finite_1d(values, name):
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{name} is empty: nothing to plot.")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return values


# --------------------------------------------------------------------------- STRIP


@_documented
def plot_entropy_histogram(
    clean_scores,
    poisoned_scores=None,
    *,
    threshold=None,
    bins=30,
    density=True,
    xlabel="Entropy (bits)",
    title=None,
    ax=None,
):
    """Histogram of STRIP scores of clean and poisoned inputs, with the threshold.

    Poisoned inputs keep the attacker's target label under superimposition, so their
    entropy piles up near zero while clean inputs spread to higher values; inputs left
    of the threshold line are flagged as poisoned.

    Parameters
    ----------
    clean_scores : array-like of shape (n_clean,)
        Scores of clean inputs, e.g. ``detector.score_samples(X_clean)`` or the fitted
        ``detector.clean_scores_``.
    poisoned_scores : array-like of shape (n_poisoned,), default=None
        Scores of inputs carrying the trigger.
    threshold : float, default=None
        Where to draw the decision threshold (for a fitted
        :class:`~skbackdoor.STRIPDetector`, its ``offset_``).
    bins : int or sequence, default=30
        Histogram bins, shared by both groups so the bars line up.
    density : bool, default=True
        Normalise each histogram to unit area, so groups of different sizes compare.
    xlabel : str, default="Entropy (bits)"
        Label of the x axis (use another one for the ``"agreement"`` statistic).
    %(on_ax)s

    %(examples)s
    >>> import numpy as np
    >>> from skbackdoor.plotting import plot_entropy_histogram
    >>> rng = np.random.default_rng(0)
    >>> ax = plot_entropy_histogram(rng.normal(1.5, 0.3, 500), rng.normal(0.1, 0.05, 500),
    ...                             threshold=0.8)
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['clean', 'poisoned', 'threshold = 0.8']
    """
    clean = _finite_1d(clean_scores, "clean_scores")
    poisoned = None if poisoned_scores is None else _finite_1d(poisoned_scores, "poisoned_scores")
    if isinstance(bins, (int, np.integer)):
        pooled = clean if poisoned is None else np.concatenate([clean, poisoned])
        low, high = pooled.min(), pooled.max()
        if threshold is not None:
            low, high = min(low, threshold), max(high, threshold)
        if high == low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, int(bins) + 1)
    ax = _axes(ax)
    ax.hist(clean, bins=bins, density=density, alpha=0.6, color="tab:blue", label="clean")
    if poisoned is not None:
        ax.hist(poisoned, bins=bins, density=density, alpha=0.6, color="tab:red", label="poisoned")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.3g}")
    return _label(ax, xlabel, "Density" if density else "Number of inputs", title)


# --------------------------------------------------------------------------- Neural Cleanse

__all__ += ["plot_anomaly_index", "plot_reversed_triggers"]


@_documented
def plot_reversed_triggers(
    masks, patterns, *, labels=None, norms=None, flagged=None, pixel_range=None, max_labels=10, fig=None
):
    """Reversed triggers side by side: the mask, the pattern and the trigger they make.

    One column per label and three rows: the mask ``m`` (white = 1), the pattern ``p``,
    and what the trigger stamps, ``m * p`` on black. A backdoor target's mask is small
    and, for a patch trigger, sits where the patch is.

    Parameters
    ----------
    masks : array-like of shape (n_labels, height, width)
        Masks in [0, 1], e.g. a fitted :class:`~skbackdoor.NeuralCleanse`'s ``masks_``.
    patterns : array-like of shape (n_labels, height, width, channels)
        Patterns in pixel units (``patterns_``); 1 or 3 channels.
    labels : array-like of shape (n_labels,), default=None
        Label of each row of ``masks`` (``scanned_labels_``); ``0 .. n_labels - 1`` by
        default.
    norms : array-like of shape (n_labels,), default=None
        L1 norm of each mask, shown in the titles; the columns are then ordered by
        increasing norm (most suspicious first). By default the masks' sums.
    flagged : array-like of int, default=None
        Labels to title in red (``flagged_labels_``).
    pixel_range : tuple of float, default=None
        ``(min, max)`` pixel values mapped to black and white (``pixel_range_``); by
        default the patterns' own range.
    max_labels : int, default=10
        Most columns drawn: the ``max_labels`` smallest norms.
    %(fig)s

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (3, n_columns)

    %(examples)s
    >>> import numpy as np
    >>> from skbackdoor.plotting import plot_reversed_triggers
    >>> rng = np.random.default_rng(0)
    >>> masks = rng.uniform(0, 1, (4, 8, 8)); masks[2] = 0; masks[2, 6:, 6:] = 1
    >>> patterns = rng.uniform(0, 16, (4, 8, 8, 1))
    >>> axes = plot_reversed_triggers(masks, patterns, flagged=[2], pixel_range=(0, 16))
    >>> axes.shape, axes[0, 0].get_title().splitlines()[0]
    ((3, 4), 'label 2')
    """
    masks = np.asarray(masks, dtype=np.float64)
    patterns = np.asarray(patterns, dtype=np.float64)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if patterns.ndim == 3:
        patterns = patterns[..., np.newaxis]
    if masks.ndim != 3 or patterns.ndim != 4 or masks.shape != patterns.shape[:3]:
        raise ValueError(
            "masks must have shape (n_labels, height, width) and patterns (n_labels, height, "
            f"width, channels) with the same first three sizes; got {masks.shape} and {patterns.shape}."
        )
    if len(masks) == 0:
        raise ValueError("masks is empty: nothing to plot.")
    if patterns.shape[-1] not in (1, 3):
        raise ValueError(f"patterns must have 1 or 3 channels to be shown, got {patterns.shape[-1]}.")
    n_labels = len(masks)
    labels = np.arange(n_labels) if labels is None else np.asarray(labels).ravel()
    norms = masks.reshape(n_labels, -1).sum(axis=1) if norms is None else np.asarray(norms, dtype=float).ravel()
    if len(labels) != n_labels or len(norms) != n_labels:
        raise ValueError(f"labels and norms need one entry per mask ({n_labels}).")
    flagged = set() if flagged is None else {int(label) for label in np.asarray(flagged).ravel()}
    low, high = (patterns.min(), patterns.max()) if pixel_range is None else pixel_range
    span = max(float(high) - float(low), 1e-12)
    shown = np.argsort(norms, kind="stable")[: int(max_labels)]

    if fig is None:
        plt = _import_pyplot()
        fig = plt.figure(figsize=(1.6 * len(shown) + 0.8, 5.2))
    axes = np.asarray(fig.subplots(3, len(shown), squeeze=False))
    rows = ("mask", "pattern", "mask * pattern")
    for column, k in enumerate(shown):
        pattern = np.clip((patterns[k] - low) / span, 0, 1)
        images = (masks[k], pattern, masks[k][..., np.newaxis] * pattern)
        for row, image in enumerate(images):
            ax = axes[row, column]
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(rows[row])
        is_flagged = int(labels[k]) in flagged
        axes[0, column].set_title(
            f"label {labels[k]}\nnorm {norms[k]:.3g}", color="tab:red" if is_flagged else "black", fontsize=9
        )
    return axes


@_documented
def plot_anomaly_index(anomaly_index, *, labels=None, threshold=2.0, flagged=None, title=None, ax=None):
    """Bar chart of the Neural Cleanse anomaly index of each label, with the threshold.

    Labels that were not fully optimised (NaN index, e.g. screened out) are left out.

    Parameters
    ----------
    anomaly_index : array-like of shape (n_classes,)
        A fitted :class:`~skbackdoor.NeuralCleanse`'s ``anomaly_index_``.
    labels : array-like of shape (n_classes,), default=None
        The label of each entry; ``0 .. n_classes - 1`` by default.
    threshold : float, default=2.0
        Drawn as a dashed line (``anomaly_threshold``).
    flagged : array-like of int, default=None
        Labels drawn in red (``flagged_labels_``). Only labels whose mask is below the
        median can be flagged, so a high bar in grey belongs to a label with an
        unusually large mask.
    %(on_ax)s

    %(examples)s
    >>> import numpy as np
    >>> from skbackdoor.plotting import plot_anomaly_index
    >>> ax = plot_anomaly_index([3.5, 0.2, np.nan, 0.9], flagged=[0])
    >>> [tick.get_text() for tick in ax.get_xticklabels()]
    ['0', '1', '3']
    """
    index = np.asarray(anomaly_index, dtype=np.float64).ravel()
    labels = np.arange(len(index)) if labels is None else np.asarray(labels).ravel()
    if len(labels) != len(index):
        raise ValueError(f"labels has {len(labels)} entries but anomaly_index has {len(index)}.")
    kept = ~np.isnan(index)
    if not kept.any():
        raise ValueError("anomaly_index holds no finite value: nothing to plot.")
    index, labels = index[kept], labels[kept]
    flagged = set() if flagged is None else {int(label) for label in np.asarray(flagged).ravel()}
    colors = ["tab:red" if int(label) in flagged else "tab:gray" for label in labels]
    # An infinite index (MAD of 0) is drawn as a bar just above the largest finite one.
    finite = index[np.isfinite(index)]
    top = max(float(threshold), float(finite.max()) if finite.size else 0.0) * 1.1 + 1e-9
    heights = np.where(np.isfinite(index), index, top)
    ax = _axes(ax)
    positions = np.arange(len(index))
    ax.bar(positions, heights, color=colors)
    ax.axhline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:g}")
    ax.set_xticks(positions)
    ax.set_xticklabels([str(label) for label in labels], rotation=90 if len(labels) > 20 else 0)
    return _label(ax, "Label", "Anomaly index", title)


# --------------------------------------------------------------------------- Fine-Pruning

__all__ += ["plot_activation_maps", "plot_cca_asr_heatmaps", "plot_pruning_curve"]


def _check_fitted_pruner(pruner):
    if not hasattr(pruner, "pruning_curve_"):
        raise ValueError(
            "Expected a fitted FinePruner (with pruning_curve_); call fit first, or pass a "
            "curve dict with 'fraction' and 'accuracy'."
        )


@_documented
def plot_pruning_curve(pruner, X_poisoned=None, y_target=None, *, title=None, ax=None):
    """Clean accuracy and attack success rate against the fraction of channels pruned.

    The figure of the Fine-Pruning paper (its Figure 3) and of the CSAW-HackML-2020
    reports: as dormant channels go, clean accuracy holds while the attack success rate
    falls. Both curves are for the BadNet pruned in the fitted order, before
    fine-tuning; a dotted line marks the fraction the pruner chose.

    Parameters
    ----------
    pruner : fitted FinePruner or dict
        A fitted :class:`~skbackdoor.FinePruner`, whose ``pruning_curve_`` gives the
        clean (validation) accuracy; or a curve dict with ``"fraction"`` and
        ``"accuracy"``, as ``pruning_curve_``.
    X_poisoned : array-like of shape (n_poisoned, height, width, channels), default=None
        Inputs carrying the trigger; with a fitted pruner, adds the attack success rate
        computed by ``pruner.pruning_sweep(X_poisoned, y_target)``.
    y_target : int or array-like of shape (n_poisoned,), default=None
        The attacker's target label(s); required with ``X_poisoned``.
    %(on_ax)s

    %(examples)s
    >>> import numpy as np
    >>> from skbackdoor.plotting import plot_pruning_curve
    >>> fraction = np.linspace(0, 1, 11)
    >>> ax = plot_pruning_curve({"fraction": fraction, "accuracy": 1 - fraction ** 4})
    >>> ax.get_xlabel()
    'Fraction of channels pruned'
    """
    if isinstance(pruner, dict):
        if X_poisoned is not None:
            raise ValueError("X_poisoned needs a fitted FinePruner, not a curve dict.")
        curve, chosen = pruner, None
    else:
        _check_fitted_pruner(pruner)
        curve = pruner.pruning_curve_
        chosen = len(pruner.pruned_channels_) / pruner.n_channels_
    fraction = _finite_1d(curve["fraction"], "fraction")
    accuracy = _finite_1d(curve["accuracy"], "accuracy")
    if len(fraction) != len(accuracy):
        raise ValueError(f"fraction has {len(fraction)} entries but accuracy has {len(accuracy)}.")
    ax = _axes(ax)
    ax.plot(fraction, 100 * accuracy, color="tab:blue", label="clean accuracy")
    if X_poisoned is not None:
        if y_target is None:
            raise ValueError("y_target is required with X_poisoned.")
        asr = pruner.pruning_sweep(X_poisoned, y_target)["accuracy"]
        ax.plot(fraction, 100 * asr, color="tab:red", label="attack success rate")
    if chosen is not None:
        ax.axvline(chosen, color="black", linestyle=":", label=f"pruned {chosen:.0%}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-2, 102)
    return _label(ax, "Fraction of channels pruned", "Rate (%)", title)


def _param_column(cv_results, name):
    if f"param_{name}" in cv_results:
        return f"param_{name}"
    matches = [key for key in cv_results if key.startswith("param_") and key.endswith(f"__{name}")]
    if len(matches) == 1:
        return matches[0]
    searched = sorted(key[len("param_") :] for key in cv_results if key.startswith("param_"))
    raise ValueError(f"cv_results has no parameter {name!r}; the search varied {searched}.")


@_documented
def plot_cca_asr_heatmaps(
    cv_results, *, rows="learning_rate", columns="prune_fraction", cca_key="cca", asr_key="asr", fig=None
):
    """Heatmaps of clean accuracy and attack success rate over two searched parameters.

    Made for ``GridSearchCV(FinePruner(...), {"learning_rate": [...], "prune_fraction":
    [...]}, scoring=backdoor_scoring(...))``, as in the CSAW-HackML-2020 reports. Cells
    average the mean test scores of all candidates sharing the two values; the ASR
    column holds negated rates (see :func:`skbackdoor.metrics.make_asr_scorer`) and is
    shown as a rate.

    Parameters
    ----------
    cv_results : dict
        ``search.cv_results_``.
    rows, columns : str, default="learning_rate", "prune_fraction"
        Parameter names; a nested name such as ``repaired__learning_rate`` is found
        from its last part when that is unambiguous.
    cca_key, asr_key : str, default="cca", "asr"
        Scoring keys of the search.
    %(fig)s

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (2,)
        Clean accuracy, then attack success rate, in percent.

    %(examples)s
    >>> import numpy as np
    >>> from skbackdoor.plotting import plot_cca_asr_heatmaps
    >>> results = {
    ...     "param_learning_rate": np.array([1e-3, 1e-3, 1e-2, 1e-2]),
    ...     "param_prune_fraction": np.array([0.2, 0.5, 0.2, 0.5]),
    ...     "mean_test_cca": np.array([0.92, 0.90, 0.91, 0.88]),
    ...     "mean_test_asr": np.array([-0.60, -0.10, -0.05, -0.01]),
    ... }
    >>> axes = plot_cca_asr_heatmaps(results)
    >>> [ax.get_title() for ax in axes]
    ['Clean accuracy (%)', 'Attack success rate (%)']
    """
    row_values = np.asarray(cv_results[_param_column(cv_results, rows)], dtype=object)
    column_values = np.asarray(cv_results[_param_column(cv_results, columns)], dtype=object)
    tables = {}
    for key, sign, label in ((cca_key, 1.0, "Clean accuracy (%)"), (asr_key, -1.0, "Attack success rate (%)")):
        column = f"mean_test_{key}"
        if column not in cv_results:
            raise ValueError(f"cv_results has no {column!r}; was the search scored with {key!r}?")
        tables[label] = sign * 100 * np.asarray(cv_results[column], dtype=np.float64)
    row_levels = sorted(set(row_values.tolist()), key=_sort_key)
    column_levels = sorted(set(column_values.tolist()), key=_sort_key)
    if fig is None:
        plt = _import_pyplot()
        fig = plt.figure(figsize=(2 + 2.4 * len(column_levels), 1.2 + 0.6 * len(row_levels)))
    axes = np.asarray(fig.subplots(1, 2, squeeze=False))[0]
    for ax, (label, scores) in zip(axes, tables.items()):
        grid = np.full((len(row_levels), len(column_levels)), np.nan)
        for i, row in enumerate(row_levels):
            for j, col in enumerate(column_levels):
                cell = scores[(row_values == row) & (column_values == col)]
                cell = cell[~np.isnan(cell)]
                if cell.size:
                    grid[i, j] = cell.mean()
        cmap = "viridis" if label.startswith("Clean") else "magma_r"
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    text = f"{grid[i, j]:.1f}"
                    ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8, path_effects=_outline())
        ax.set_xticks(range(len(column_levels)))
        ax.set_xticklabels([f"{value:g}" if isinstance(value, float) else str(value) for value in column_levels])
        ax.set_yticks(range(len(row_levels)))
        ax.set_yticklabels([f"{value:g}" if isinstance(value, float) else str(value) for value in row_levels])
        ax.set_xlabel(columns)
        ax.set_ylabel(rows)
        ax.set_title(label)
        fig.colorbar(image, ax=ax)
    return axes


def _sort_key(value):
    """Numbers in numeric order, then anything else (e.g. None) by its text."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


@_documented
def plot_activation_maps(pruner, X, *, n_columns=None, fig=None):
    """Mean activation map of every channel of the pruned layer, before and after.

    Two mosaics of the ``layer_`` channels' activations averaged over ``X``: the
    BadNet's and the fine-pruned network's, on one colour scale. Pruned channels are
    outlined in red (they are black after). With poisoned inputs as ``X``, the
    channels the trigger lights up, and whether fine-pruning silenced them, show at a
    glance, as in the CSAW-HackML-2020 reports.

    Parameters
    ----------
    pruner : fitted FinePruner
        A fitted :class:`~skbackdoor.FinePruner`.
    X : array-like of shape (n_samples, height, width, channels)
        Images scaled like the fit data (clean or poisoned).
    n_columns : int, default=None
        Channels per mosaic row; about the square root of the channel count when
        ``None``.
    %(fig)s

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (2,)
        Before (the BadNet) and after (``model_``).

    %(examples)s
    >>> import keras, numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skbackdoor import FinePruner
    >>> from skbackdoor.plotting import plot_activation_maps
    >>> digits = load_digits()
    >>> X, y = digits.images[..., np.newaxis].astype("float32"), digits.target
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(9, 3, activation="relu", name="conv"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> pruner = FinePruner(model=model, prune_fraction=0.4, epochs=0).fit(X[:300], y[:300])
    >>> axes = plot_activation_maps(pruner, X[300:400])
    >>> len(axes[1].patches)  # the 3 pruned channels, outlined
    3
    """
    from .models import layer_activations, load_badnet

    _check_fitted_pruner(pruner)
    X = pruner._validate_images(X, pruner.model_, reset=False)
    layer = pruner.layer_
    maps = [
        layer_activations(model, X, layer).mean(axis=0)
        for model in (load_badnet(pruner.model), pruner.model_)
    ]
    height, width, n_channels = maps[0].shape
    n_columns = int(np.ceil(np.sqrt(n_channels))) if n_columns is None else int(n_columns)
    if n_columns < 1:
        raise ValueError(f"n_columns must be a positive integer, got {n_columns}.")
    n_rows = int(np.ceil(n_channels / n_columns))
    gap = 1
    vmax = max(float(m.max()) for m in maps) or 1.0
    mosaic_height = n_rows * (height + gap) - gap
    mosaic_width = n_columns * (width + gap) - gap
    if fig is None:
        plt = _import_pyplot()
        # Two mosaics and a colour bar across 10 inches; the height follows their aspect,
        # plus room for the titles, so that no empty band surrounds them.
        panel_width = 4.4
        fig = plt.figure(figsize=(10, panel_width * mosaic_height / mosaic_width + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(1, 2, squeeze=False))[0]
    pruned = set(int(c) for c in pruner.pruned_channels_)
    # Channel numbers: small enough to leave most of a tile visible.
    number_size = float(np.clip(40 / max(n_columns, n_rows), 4, 8))
    for ax, activation, label in zip(axes, maps, ("BadNet", "fine-pruned")):
        mosaic = np.full((mosaic_height, mosaic_width), np.nan)
        for channel in range(n_channels):
            top, left = (channel // n_columns) * (height + gap), (channel % n_columns) * (width + gap)
            mosaic[top : top + height, left : left + width] = activation[..., channel]
            ax.text(
                left - 0.4, top - 0.4, str(channel), fontsize=number_size, color="white",
                ha="left", va="top", path_effects=_outline(),
            )
        image = ax.imshow(mosaic, cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        for channel in pruned:
            top, left = (channel // n_columns) * (height + gap), (channel % n_columns) * (width + gap)
            ax.add_patch(_rectangle(left - 0.5, top - 0.5, width, height))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{label}: mean activation of {layer!r}", fontsize=10)
    colorbar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.01)
    colorbar.set_label(f"mean activation over {len(X)} images")
    axes[1].text(
        1.0, -0.02, "numbers: channel index; red outline: pruned", transform=axes[1].transAxes,
        ha="right", va="top", fontsize=8,
    )
    return axes


def _rectangle(x, y, width, height):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, fill=False, edgecolor="tab:red", linewidth=1.2)
