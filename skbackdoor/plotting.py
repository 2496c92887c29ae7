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
