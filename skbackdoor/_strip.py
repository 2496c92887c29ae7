"""STRIP: run-time detection of trojaned inputs by strong intentional perturbation.

Gao, Xu, Wang, Chen, Ranasinghe and Nepal, "STRIP: a defence against trojan attacks on
deep neural networks", ACSAC 2019, https://arxiv.org/abs/1902.06531.

An input is superimposed on a few clean images. A clean input's class is destroyed by
the blend, so the model's predictions are uncertain (high entropy); an input that
carries a trigger keeps pulling the model to the attacker's target, so its predictions
stay confident (low entropy). :class:`STRIPDetector` turns this into a scikit-learn
outlier detector whose threshold is set from a chosen false rejection rate.
"""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import entr
from scipy.stats import norm
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import BadNetEstimatorMixin, progress_bar
from ._validation import check_images, check_pixel_range, pixel_range
from .models import iter_batches, model_input_shape, model_n_classes, predict_proba_batches

__all__ = ["STRIPDetector"]

# Images per pass when the input array is only converted and summed (no network).
_CONVERSION_CHUNK = 512
# Overlay keys drawn per block in the dense sampler (bounds its memory).
_DENSE_SAMPLER_KEYS = 1 << 20


class STRIPDetector(BadNetEstimatorMixin, OutlierMixin, BaseEstimator):
    """Flag inputs that carry a backdoor trigger with STRIP (Gao et al., 2019).

    Each input ``x`` is blended with ``n_overlays`` clean images ``o`` drawn from the
    pool given to :meth:`fit`, ``clip(alpha * x + beta * o)`` (clipped to the pixel range
    of the pool), and the blends go through the model. The score of ``x`` is the mean,
    over its blends, of the Shannon entropy (in bits) of the model's class probabilities:
    triggered inputs keep the attacker's label under blending and score low. The
    threshold ``offset_`` is the ``frr`` quantile of the scores of the clean pool, so
    about a share ``frr`` of clean inputs is rejected.

    The blends of many inputs go through the network together, ``batch_size`` images
    per compiled call, and inputs are streamed chunk by chunk: memory does not grow with
    the number of inputs beyond the input array and one score per input.

    Parameters
    ----------
    model : keras.Model, str or path-like, or fitted scikeras KerasClassifier
        The (possibly backdoored) classifier, taking the same pixel values as ``X``
        (see :func:`skbackdoor.models.load_badnet`). It is never modified.
    n_overlays : int, default=10
        Clean images blended with each input (the paper uses up to 100; more overlays
        separate better and cost proportionally more). Must be smaller than the pool.
    frr : float in (0, 0.5], default=0.01
        Target false rejection rate: the share of clean inputs the threshold rejects.
    alpha : float, default=1.0
        Weight of the input in the blend (the paper uses 1; CSAW reports 0.9).
    beta : float, default=1.0
        Weight of the clean overlay in the blend (the paper uses 1; CSAW reports 0.5).
    statistic : {"entropy", "agreement"}, default="entropy"
        What is measured over the blends of an input:

        - ``"entropy"`` (the paper): mean over blends of the entropy over classes of
          the model's probabilities; the score is that entropy.
        - ``"agreement"``: share of blends predicted as their most frequent label,
          which is high for triggered inputs; the score is ``1 - agreement`` so that,
          as for the entropy, higher means more normal.
    threshold : {"gaussian", "quantile"}, default="gaussian"
        How the ``frr`` quantile of the clean scores is estimated: from a normal
        distribution fitted to them (maximum likelihood; the paper's choice, which
        extrapolates below 1 % from a small pool but misses when the clean scores are
        skewed: a warning is raised if it falls to 0 or below) or empirically.
    batch_size : int, default=1024
        Blended images per network call. Inputs are processed
        ``max(1, batch_size // n_overlays)`` at a time. It changes speed and memory,
        never the scores.
    random_state : int, RandomState instance or None, default=None
        Draws the overlays. With an int, every call draws the same overlays for the
        same inputs, so scores are reproducible.
    verbose : int, default=0
        Show a progress bar over the inputs when positive.

    Attributes
    ----------
    model_ : keras.Model
        The model that is run (the one given, not a copy: it is only read).
    pool_ : ndarray of shape (n_pool, height, width, channels), float32
        The clean images overlays are drawn from (the fit data).
    pixel_range_ : tuple of float
        ``(min, max)`` pixel values of the pool; blends are clipped to it and later
        inputs must lie in it (up to 10 % of the span).
    n_classes_ : int
        Number of classes of the model.
    clean_scores_ : ndarray of shape (n_pool,)
        Scores of the pool images, each blended with other pool images.
    offset_ : float
        Decision threshold on the scores: inputs scoring below it are flagged.

    See Also
    --------
    skbackdoor.plotting.plot_entropy_histogram : Plot clean and poisoned scores with
        ``offset_``.
    skbackdoor.metrics.detection_scoring : FRR / FAR scorers to tune ``frr`` or
        ``n_overlays`` with ``GridSearchCV``.

    Notes
    -----
    An input is never blended with itself: an input equal to a pool image (every pool
    image during :meth:`fit`) draws its overlays from the other pool images. Overlays
    of one input are distinct pool images. Because the same rule applies at fit and
    predict time, ``fit_predict(X)`` equals ``fit(X).predict(X)`` for an int
    ``random_state``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from skbackdoor import STRIPDetector
    >>> rng = np.random.default_rng(0)
    >>> X_clean = rng.uniform(0, 1, size=(60, 8, 8, 1)).astype("float32")
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> detector = STRIPDetector(model=model, n_overlays=5, frr=0.05, random_state=0)
    >>> detector = detector.fit(X_clean)
    >>> detector.score_samples(X_clean[:4]).shape
    (4,)
    >>> labels = detector.predict(X_clean[:4])
    >>> bool(np.isin(labels, [-1, 1]).all())
    True
    """

    _parameter_constraints = {
        "model": "no_validation",
        "n_overlays": [Interval(Integral, 1, None, closed="left")],
        "frr": [Interval(Real, 0, 0.5, closed="right")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "statistic": [StrOptions({"entropy", "agreement"})],
        "threshold": [StrOptions({"gaussian", "quantile"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        model=None,
        n_overlays=10,
        frr=0.01,
        alpha=1.0,
        beta=1.0,
        statistic="entropy",
        threshold="gaussian",
        batch_size=1024,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.n_overlays = n_overlays
        self.frr = frr
        self.alpha = alpha
        self.beta = beta
        self.statistic = statistic
        self.threshold = threshold
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Keep ``X`` as the clean overlay pool and set the threshold from its scores.

        Parameters
        ----------
        X : array-like of shape (n_pool, height, width, channels)
            Clean images (e.g. the defender's validation set), in the pixel values the
            model takes. More than ``n_overlays`` are needed.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : STRIPDetector
            The fitted detector.
        """
        model = self._load_badnet()
        pool = check_images(X, input_shape=model_input_shape(model), name="X")
        if len(pool) <= self.n_overlays:
            raise ValueError(
                f"n_overlays={self.n_overlays} needs at least {self.n_overlays + 1} clean "
                f"images in X (each image is blended with {self.n_overlays} others); got "
                f"{len(pool)}. Pass more clean images or lower n_overlays."
            )
        self.model_ = model
        # A private copy: the pool must not change if the caller edits their array.
        self.pool_ = np.array(pool, dtype=np.float32, copy=True)
        self.pixel_range_ = pixel_range(self.pool_)
        self.n_classes_ = model_n_classes(model)
        fingerprints = _fingerprints(self.pool_)
        order = np.argsort(fingerprints, kind="stable")
        self._pool_order = order
        self._pool_sorted_fingerprints = fingerprints[order]

        self.clean_scores_ = self._scores(self.pool_, fingerprints=fingerprints)
        if self.threshold == "gaussian":
            mean, std = norm.fit(self.clean_scores_)
            self.offset_ = float(mean + norm.ppf(self.frr) * std)
            if self.offset_ <= 0:
                # Both statistics are >= 0: such a threshold can never flag anything.
                warnings.warn(
                    f"The Gaussian fit of the clean scores puts the threshold at "
                    f"{self.offset_:.3g}, not above the lowest possible score (0): no input "
                    "will ever be flagged. The clean scores are far from normal (skewed towards "
                    "0); use threshold='quantile' or a larger frr.",
                    UserWarning,
                )
        else:
            self.offset_ = float(np.quantile(self.clean_scores_, self.frr))
        return self

    def fit_predict(self, X, y=None):
        """Fit on ``X`` and flag its images, reusing the scores computed in ``fit``.

        Equal to ``fit(X).predict(X)`` for an int ``random_state``, at half the cost.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Clean images.
        y : None
            Ignored.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            ``+1`` for clean, ``-1`` for flagged.
        """
        self.fit(X, y)
        return np.where(self.clean_scores_ - self.offset_ >= 0, 1, -1)

    # ---------------------------------------------------------------- predicting

    def score_samples(self, X):
        """STRIP score of each input: higher means more normal (clean).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Inputs in the pixel values of the fit data. Any numeric dtype; ``uint8``
            arrays are converted chunk by chunk, never as a whole.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Mean entropy in bits over the blends (``statistic="entropy"``) or one minus
            the agreement of the blends' labels (``statistic="agreement"``).
        """
        check_is_fitted(self)
        X = self._check_inputs(X)
        return self._scores(X, fingerprints=_fingerprints(X))

    def decision_function(self, X):
        """Score minus ``offset_``: negative for inputs flagged as poisoned.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Inputs.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Flag inputs: ``+1`` clean, ``-1`` poisoned (scikit-learn's outlier labels).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            ``-1`` exactly where :meth:`decision_function` is negative.
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def score(self, X, y, sample_weight=None):
        """Accuracy of :meth:`predict` against ``+1`` (clean) / ``-1`` (poisoned) labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels)
            Inputs, clean and poisoned.
        y : array-like of shape (n_samples,)
            ``+1`` for clean inputs, ``-1`` for poisoned ones.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        accuracy : float
        """
        check_is_fitted(self)
        if y is None:
            raise ValueError(
                "score needs labels y: +1 for clean inputs and -1 for poisoned ones. To "
                "tune on clean folds alone use skbackdoor.metrics.detection_scoring."
            )
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per input; got shape {y.shape} for {len(X)} inputs.")
        if not np.isin(y, [-1, 1]).all():
            raise ValueError(
                f"y must hold +1 (clean) and -1 (poisoned) labels; got values {np.unique(y)[:10].tolist()}."
            )
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    # ------------------------------------------------------------------ internals

    def _check_inputs(self, X):
        # Keep the caller's numeric dtype (uint8 faces are 4x smaller than float32):
        # _scores converts chunk by chunk.
        if hasattr(X, "numpy") and not isinstance(X, np.ndarray):
            X = X.numpy()
        dtype = getattr(X, "dtype", None)
        keep = dtype is not None and np.issubdtype(dtype, np.number)
        X = check_images(
            X,
            input_shape=model_input_shape(self.model_),
            name="X",
            dtype=dtype if keep else np.float32,
        )
        return check_pixel_range(X, self.pixel_range_, name="X")

    def _scores(self, X, *, fingerprints):
        """Scores of validated images ``X``, streamed in chunks through the network."""
        n_samples, n_overlays = len(X), self.n_overlays
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31 - 1))
        excluded = self._matching_pool_index(X, fingerprints)
        overlays = _draw_overlays(rng, len(self.pool_), n_overlays, excluded)
        inputs_per_call = max(1, self.batch_size // n_overlays)
        low, high = self.pixel_range_
        scores = np.empty(n_samples, dtype=np.float64)
        with progress_bar(n_samples, verbose=self.verbose, desc="STRIP") as update:
            for chunk in iter_batches(n_samples, inputs_per_call):
                blends = _superimpose(
                    X[chunk], self.pool_, overlays[chunk], self.alpha, self.beta, low, high
                )
                proba = predict_proba_batches(self.model_, blends, batch_size=len(blends))
                proba = proba.reshape(chunk.stop - chunk.start, n_overlays, -1)
                scores[chunk] = _statistic(proba, self.statistic)
                if update is not None:
                    update(chunk.stop - chunk.start)
        return scores

    def _matching_pool_index(self, X, fingerprints):
        """Index of the first pool image equal to each input, ``len(pool_)`` if none."""
        n_pool = len(self.pool_)
        excluded = np.full(len(X), n_pool, dtype=np.int64)
        sorted_fingerprints = self._pool_sorted_fingerprints
        first = np.searchsorted(sorted_fingerprints, fingerprints, side="left")
        last = np.searchsorted(sorted_fingerprints, fingerprints, side="right")
        for row in np.flatnonzero(last > first):
            image = np.asarray(X[row], dtype=np.float32)
            candidates = np.sort(self._pool_order[first[row] : last[row]])
            for candidate in candidates:
                if np.array_equal(self.pool_[candidate], image):
                    excluded[row] = candidate
                    break
        return excluded


# ---------------------------------------------------------------------- helpers


def _fingerprints(X):
    """Sum of each image's float32 pixels, a cheap key to find inputs equal to pool images."""
    sums = np.empty(len(X), dtype=np.float64)
    for chunk in iter_batches(len(X), _CONVERSION_CHUNK):
        block = np.asarray(X[chunk], dtype=np.float32).astype(np.float64)
        sums[chunk] = block.reshape(len(block), -1).sum(axis=1)
    return sums


def _draw_overlays(rng, n_pool, n_overlays, excluded):
    """Draw ``n_overlays`` distinct pool indices per row, never the row's ``excluded``.

    ``excluded[i] == n_pool`` means nothing to exclude. The draw depends only on the
    generator, the pool size and ``excluded``, never on how inputs are later batched.
    """
    n_rows = len(excluded)
    has_exclusion = excluded < n_pool
    if n_pool <= 4 * n_overlays:
        # Few candidates: rank random keys, the excluded image's key pushed last.
        rows_per_block = max(1, _DENSE_SAMPLER_KEYS // n_pool)
        out = np.empty((n_rows, n_overlays), dtype=np.int64)
        for block in iter_batches(n_rows, rows_per_block):
            keys = rng.random((block.stop - block.start, n_pool))
            rows = np.flatnonzero(has_exclusion[block])
            keys[rows, excluded[block][rows]] = 2.0
            out[block] = np.argpartition(keys, n_overlays - 1, axis=1)[:, :n_overlays]
        return out
    # Many candidates: draw with replacement, redraw the rare repeats. An excluded
    # image is skipped by drawing from n_pool - 1 values and shifting those above it.
    high = np.where(has_exclusion, n_pool - 1, n_pool)
    draws = rng.integers(0, high[:, None], size=(n_rows, n_overlays))
    while True:
        draws.sort(axis=1)
        repeated = np.zeros(draws.shape, dtype=bool)
        repeated[:, 1:] = draws[:, 1:] == draws[:, :-1]
        if not repeated.any():
            break
        rows = np.nonzero(repeated)[0]
        draws[repeated] = rng.integers(0, high[rows])
    draws += draws >= excluded[:, None]
    return draws


def _superimpose(inputs, pool, overlays, alpha, beta, low, high):
    """``clip(alpha * input + beta * overlay)`` for every (input, overlay) pair, flat."""
    n_inputs, n_overlays = overlays.shape
    blends = pool[overlays.ravel()]  # a fresh float32 array, safe to edit in place
    blends = blends.reshape((n_inputs, n_overlays) + pool.shape[1:])
    if beta != 1:
        blends *= np.float32(beta)
    inputs = np.asarray(inputs, dtype=np.float32)
    if alpha != 1:
        inputs = inputs * np.float32(alpha)
    blends += inputs[:, np.newaxis]
    np.clip(blends, low, high, out=blends)
    return blends.reshape((n_inputs * n_overlays,) + pool.shape[1:])


def _statistic(proba, statistic):
    """Per-input score from probabilities of shape (n_inputs, n_overlays, n_classes)."""
    if statistic == "entropy":
        return entr(proba).sum(axis=2).mean(axis=1) / np.log(2)
    n_inputs, n_overlays, n_classes = proba.shape
    labels = proba.argmax(axis=2) + n_classes * np.arange(n_inputs)[:, np.newaxis]
    counts = np.bincount(labels.ravel(), minlength=n_inputs * n_classes)
    agreement = counts.reshape(n_inputs, n_classes).max(axis=1) / n_overlays
    return 1.0 - agreement
