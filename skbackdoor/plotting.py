"""Figures for backdoor defenses (needs matplotlib: ``pip install "skbackdoor[plot]"``).

- :func:`plot_entropy_histogram`: STRIP entropy histograms of clean and poisoned
  inputs with the detection threshold, the figure of the STRIP paper and of the
  CSAW-HackML-2020 reports.

Every function draws on ``ax`` (a new figure when ``None``) and returns the axes, so
figures compose with the rest of a matplotlib workflow. matplotlib is imported only
when a function is called: the package works without it.
"""

import numpy as np

__all__ = ["plot_entropy_histogram"]


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


def _finite_1d(values, name):
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{name} is empty: nothing to plot.")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return values


# --------------------------------------------------------------------------- STRIP


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
    title : str, default=None
        Axes title.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when ``None``.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Density" if density else "Number of inputs")
    if title is not None:
        ax.set_title(title)
    ax.legend()
    return ax


# --------------------------------------------------------------------------- Neural Cleanse

__all__ += ["plot_anomaly_index", "plot_reversed_triggers"]


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
    fig : matplotlib Figure, default=None
        Where to draw; a new figure when ``None``.

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (3, n_columns)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
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
    title : str, default=None
        Axes title.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when ``None``.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
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
    ax.set_xlabel("Label")
    ax.set_ylabel("Anomaly index")
    if title is not None:
        ax.set_title(title)
    ax.legend()
    return ax
