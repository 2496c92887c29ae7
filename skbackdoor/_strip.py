"""STRIP: run-time detection of trojaned inputs by strong intentional perturbation.

Gao, Xu, Wang, Chen, Ranasinghe and Nepal, "STRIP: a defence against trojan attacks on
deep neural networks", ACSAC 2019, https://arxiv.org/abs/1902.06531.

An input is superimposed on a few clean images. A clean input's class is destroyed by
the blend, so the model's predictions are uncertain (high entropy); an input that
carries a trigger keeps pulling the model to the attacker's target, so its predictions
stay confident (low entropy). :class:`STRIPDetector` turns this into a scikit-learn
outlier detector whose threshold is set from a chosen false rejection rate.
"""

import hashlib
import math
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

from ._base import LOADING_CONSTRAINTS, BadNetEstimatorMixin, document_loading_parameters, progress_bar
from ._validation import check_classifier_outputs, check_images, check_pixel_range, pixel_range
from .models import iter_batches, model_input_shape, model_n_classes, predict_proba_batches

__all__ = ["STRIPDetector"]

# Images per pass when the input array is only converted and summed (no network).
_CONVERSION_CHUNK = 512
# Overlay keys drawn per block in the dense sampler (bounds its memory).
_DENSE_SAMPLER_KEYS = 1 << 20
# Sequential scoring: a chunk of inputs fills this many network calls in its first round
# (later rounds run only the undecided inputs).
_SEQUENTIAL_CALLS_PER_CHUNK = 4
# Sequential scoring: shares of n_overlays after which the stopping rule is checked.
_CHECKPOINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Candidate stopping margins, in within-input standard deviations of the clean entropies.
_MARGIN_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
# Sequential scoring may change at most this share of frr of the clean fit decisions.
_SEQUENTIAL_TOLERANCE = 0.25
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@document_loading_parameters(
    inputs_parameters="""\
Parameters
----------
X : array-like of shape (n_samples, height, width, channels)
    Inputs.
""",
)
class STRIPDetector(BadNetEstimatorMixin, OutlierMixin, BaseEstimator):
    """Flag inputs that carry a backdoor trigger with STRIP (Gao et al., 2019).

    Each input ``x`` is blended with up to ``n_overlays`` clean images ``o`` drawn from
    the pool given to :meth:`fit`, ``clip(alpha * x + beta * o)`` (clipped to the pixel
    range of the pool), and the blends go through the model. The score of ``x`` is the
    mean, over its blends, of the Shannon entropy (in bits) of the model's class
    probabilities: triggered inputs keep the attacker's label under blending and score
    low. The threshold ``offset_`` is set on the scores of the clean pool so that a share
    ``frr`` of clean inputs is rejected.

    The blends of many inputs go through the network together, ``batch_size`` images
    per compiled call, and inputs are streamed chunk by chunk: memory does not grow with
    the number of inputs beyond the input array and one score per input.

    Parameters
    ----------
    model : keras.Model, str or path-like, or fitted scikeras KerasClassifier
        The (possibly backdoored) classifier, taking the same pixel values as ``X``
        (see :func:`skbackdoor.models.load_badnet`), with one output of at least 2
        class scores. It is never modified.
    %(loading_parameters)s
    n_overlays : int, default=10
        Clean images blended with each input (the paper uses up to 100; more overlays
        separate better and cost proportionally more); with ``sequential=True`` the
        most that are blended. Must be smaller than the pool.
    frr : float in (0, 0.5], default=0.01
        Target false rejection rate: the share of clean inputs the threshold rejects.
    alpha : float, default=1.0
        Weight of the input in the blend (the paper uses 1; CSAW reports 0.9). Must be
        positive: with ``alpha=0`` the blends do not depend on the input.
    beta : float, default=1.0
        Weight of the clean overlay in the blend (the paper uses 1; CSAW reports 0.5).
    statistic : {"entropy", "agreement"}, default="entropy"
        What is measured over the blends of an input:

        - ``"entropy"`` (the paper): mean over blends of the entropy over classes of
          the model's probabilities; the score is that entropy.
        - ``"agreement"``: share of blends predicted as their most frequent label,
          which is high for triggered inputs; the score is ``1 - agreement`` so that,
          as for the entropy, higher means more normal.
    threshold : {"quantile", "gaussian"}, default="quantile"
        How the ``frr`` quantile of the clean scores is estimated:

        - ``"quantile"``: the empirical quantile at rank ``frr * (n_pool + 1)`` of the
          clean scores (interpolated; numpy's ``method="weibull"``). For exchangeable
          clean images the expected share of new clean inputs below it is ``frr``
          whatever the distribution of the scores, and its spread is about
          ``sqrt(frr * (1 - frr) / n_pool)``: within 1 point of ``frr`` 95 % of the
          time from about 400 pool images at ``frr=0.01`` and 1,900 at ``frr=0.05``
          (``4 * frr * (1 - frr) / 0.01**2``). The pool needs at least ``1 / frr - 1``
          images (a warning says so).
        - ``"gaussian"``: from a normal distribution fitted to the clean scores (the
          paper's choice). It misses when the clean scores are skewed, as they often
          are (a warning is raised if the threshold falls to 0 or below).
    sequential : bool, default=True
        Stop blending an input as soon as its running mean entropy is decisively on
        one side of ``offset_`` (checked after every tenth of ``n_overlays``). An input
        stops when the remaining overlays cannot change its decision whatever their
        entropy, or when its running mean is more than
        ``stopping_margin_ * sqrt((n_overlays - m) / (n_overlays * m))`` from
        ``offset_`` after ``m`` overlays; the margin is the smallest that changes at
        most a share ``frr / 4`` of the clean fit decisions. The score of an input that
        stopped is the mean over the overlays it used; one that did not stop gets
        exactly the score of ``sequential=False``. Only the entropy statistic stops
        early; ``fit`` always uses every overlay.
    batch_size : int, default=1024
        Blended images per network call. It changes speed and memory, never the scores.
    random_state : int, RandomState instance or None, default=None
        Seeds the overlays. The overlays of an input depend only on its pixels, the
        fitted pool and this seed (not on the other inputs of the batch), so with an
        int, an input scores the same alone or in any batch.
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
        Scores of the pool images, each blended with ``n_overlays`` other pool images.
    offset_ : float
        Decision threshold on the scores: inputs scoring below it are flagged.
    stopping_margin_ : float
        Margin of the sequential stopping rule in bits (``inf``: only inputs whose
        decision the remaining overlays cannot change stop early; ``nan`` when
        ``sequential=False`` or the statistic is ``"agreement"``).

    See Also
    --------
    skbackdoor.plotting.plot_entropy_histogram : Plot clean and poisoned scores with
        ``offset_``.
    skbackdoor.metrics.detection_scoring : FRR / FAR scorers to tune ``frr`` or
        ``n_overlays`` with ``GridSearchCV``.

    Notes
    -----
    An input is never blended with itself: an input equal to a pool image (every pool
    image during :meth:`fit`) draws its overlays from the other pool images, so the
    clean scores of the pool are distributed like those of new clean images. Overlays
    of one input are distinct pool images, in an order drawn from a hash of the input's
    pixels and ``random_state``. Because the same rule applies at fit and predict time,
    ``fit_predict(X)`` equals ``fit(X).predict(X)`` for an int ``random_state``.

    The threshold is only as good as the pool: its images must be clean images like
    those the detector will see (not the BadNet's training images, on which a network
    is more confident).

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
        **LOADING_CONSTRAINTS,
        "n_overlays": [Interval(Integral, 1, None, closed="left")],
        "frr": [Interval(Real, 0, 0.5, closed="right")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "statistic": [StrOptions({"entropy", "agreement"})],
        "threshold": [StrOptions({"gaussian", "quantile"})],
        "sequential": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        model=None,
        architecture=None,
        input_scale=None,
        input_offset=None,
        safe_mode=True,
        n_overlays=10,
        frr=0.01,
        alpha=1.0,
        beta=1.0,
        statistic="entropy",
        threshold="quantile",
        sequential=True,
        batch_size=1024,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.architecture = architecture
        self.input_scale = input_scale
        self.input_offset = input_offset
        self.safe_mode = safe_mode
        self.n_overlays = n_overlays
        self.frr = frr
        self.alpha = alpha
        self.beta = beta
        self.statistic = statistic
        self.threshold = threshold
        self.sequential = sequential
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
        if self.alpha == 0:
            both = " and beta=0: every blend is black" if self.beta == 0 else ": the blends do not depend on the input"
            raise ValueError(
                f"alpha=0{both}, so STRIP cannot tell inputs apart. Use a positive alpha "
                "(the paper uses alpha=1, beta=1; CSAW reports alpha=0.9, beta=0.5)."
            )
        model = self._load_badnet()
        check_classifier_outputs(model, estimator="STRIPDetector")
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
        hashes = _content_hashes(self.pool_)
        order = np.argsort(hashes, kind="stable")
        self._pool_order = order
        self._pool_sorted_hashes = hashes[order]

        values = np.empty((len(self.pool_), self.n_overlays), dtype=self._value_dtype())
        root = self._root_seed()
        with progress_bar(len(self.pool_), verbose=self.verbose, desc="STRIP") as update:
            for chunk in iter_batches(len(self.pool_), max(1, self.batch_size // self.n_overlays)):
                overlays = self._overlays(self.pool_[chunk], hashes[chunk], root)
                values[chunk] = self._blend_values(self.pool_[chunk], overlays)
                if update is not None:
                    update(chunk.stop - chunk.start)
        self.clean_scores_ = _statistic(values, self.statistic, self.n_classes_)
        self.offset_ = self._threshold(self.clean_scores_)
        self.stopping_margin_ = float("nan")
        labels = self.clean_scores_ >= self.offset_
        if self._stops_early():
            self.stopping_margin_, labels = self._calibrate_stopping(values)
        self._fit_labels = np.where(labels, 1, -1)
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
        return self._fit_labels.copy()

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
            the agreement of the blends' labels (``statistic="agreement"``). With
            ``sequential=True``, inputs that stopped early get the mean over the blends
            they used.
        """
        check_is_fitted(self)
        X = self._check_inputs(X)
        return self._scores(X)

    def decision_function(self, X):
        """Score minus ``offset_``: negative for inputs flagged as poisoned.

        %(inputs_parameters)s

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Flag inputs: ``+1`` clean, ``-1`` poisoned (scikit-learn's outlier labels).

        %(inputs_parameters)s

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

    def _stops_early(self):
        return self.sequential and self.statistic == "entropy" and self.n_overlays > 1

    def _value_dtype(self):
        return np.float64 if self.statistic == "entropy" else np.int64

    def _root_seed(self):
        """One 64-bit seed per call: fixed for an int ``random_state``."""
        return np.uint64(check_random_state(self.random_state).randint(2**31 - 1))

    def _threshold(self, clean_scores):
        n_pool = len(clean_scores)
        if self.threshold == "gaussian":
            mean, std = norm.fit(clean_scores)
            offset = float(mean + norm.ppf(self.frr) * std)
            if offset <= 0:
                # Both statistics are >= 0: such a threshold can never flag anything.
                warnings.warn(
                    f"The Gaussian fit of the clean scores puts the threshold at "
                    f"{offset:.3g}, not above the lowest possible score (0): no input "
                    "will ever be flagged. The clean scores are far from normal (skewed towards "
                    "0); use threshold='quantile' (the default) or a larger frr.",
                    UserWarning,
                )
            return offset
        if self.frr * (n_pool + 1) < 1:
            warnings.warn(
                f"frr={self.frr} needs at least {math.ceil(1 / self.frr - 1)} clean images in X "
                f"to set its threshold; with {n_pool} the threshold is the lowest clean score "
                f"and about {1 / (n_pool + 1):.1%} of clean inputs will be rejected. Pass more "
                "clean images or a larger frr.",
                UserWarning,
            )
        return float(np.quantile(clean_scores, self.frr, method="weibull"))

    def _checkpoints(self):
        """Numbers of overlays after which the stopping rule is checked (then the rest)."""
        k = self.n_overlays
        points = sorted({min(k - 1, max(1, round(share * k))) for share in _CHECKPOINTS})
        return [m for m in points if 0 < m < k]

    def _calibrate_stopping(self, values):
        """Smallest margin that changes at most a share ``frr / 4`` of the clean decisions.

        Returns the margin (``inf`` when none on the grid qualifies) and the clean fit
        decisions under it (``True`` for clean).
        """
        full = values.mean(axis=1) >= self.offset_
        spread = float(np.sqrt(np.mean(values.var(axis=1, ddof=1))))
        allowed = _SEQUENTIAL_TOLERANCE * self.frr * len(values)
        for z in _MARGIN_GRID:
            margin = z * spread
            if margin <= 0:
                continue
            decided = self._simulate_sequential(values, margin)
            if np.sum(decided != full) <= allowed:
                return margin, decided
        return float("inf"), self._simulate_sequential(values, float("inf"))

    def _simulate_sequential(self, values, margin):
        """Decisions of the sequential rule given every blend's entropy (``True``: clean)."""
        k = self.n_overlays
        cumulative = np.cumsum(values, axis=1)
        decision = cumulative[:, -1] / k >= self.offset_
        undecided = np.ones(len(values), dtype=bool)
        for m in self._checkpoints():
            sums = cumulative[:, m - 1]
            stop = undecided & self._stop(sums, m, margin)
            decision[stop] = sums[stop] / m >= self.offset_
            undecided &= ~stop
        return decision

    def _stop(self, sums, m, margin):
        """Whether inputs with entropy ``sums`` over ``m`` blends are decided."""
        k, offset = self.n_overlays, self.offset_
        h_max = math.log2(self.n_classes_)
        certain = (sums >= k * offset) | (sums + (k - m) * h_max < k * offset)
        if not np.isfinite(margin):
            return certain
        return certain | (np.abs(sums / m - offset) >= margin * math.sqrt((k - m) / (k * m)))

    def _scores(self, X):
        """Scores of validated images ``X``, streamed in chunks through the network."""
        n_samples, k = len(X), self.n_overlays
        root = self._root_seed()
        sequential = self._stops_early()
        if sequential:
            checkpoints = self._checkpoints() + [k]
            inputs_per_chunk = max(1, _SEQUENTIAL_CALLS_PER_CHUNK * self.batch_size // checkpoints[0])
        else:
            inputs_per_chunk = max(1, self.batch_size // k)
        scores = np.empty(n_samples, dtype=np.float64)
        with progress_bar(n_samples, verbose=self.verbose, desc="STRIP") as update:
            for chunk in iter_batches(n_samples, inputs_per_chunk):
                inputs = np.asarray(X[chunk], dtype=np.float32)
                overlays = self._overlays(inputs, _content_hashes(inputs), root)
                if sequential:
                    scores[chunk] = self._sequential_scores(inputs, overlays, checkpoints)
                else:
                    values = self._blend_values(inputs, overlays)
                    scores[chunk] = _statistic(values, self.statistic, self.n_classes_)
                if update is not None:
                    update(chunk.stop - chunk.start)
        return scores

    def _sequential_scores(self, inputs, overlays, checkpoints):
        """Mean entropy of each input over its blends, stopping once it is decided."""
        sums = np.zeros(len(inputs), dtype=np.float64)
        used = np.zeros(len(inputs), dtype=np.int64)
        active = np.arange(len(inputs))
        done = 0
        for m in checkpoints:
            values = self._blend_values(inputs[active], overlays[active, done:m])
            sums[active] += values.sum(axis=1)
            used[active] = m
            done = m
            if m < self.n_overlays:
                active = active[~self._stop(sums[active], m, self.stopping_margin_)]
                if not len(active):
                    break
        return sums / used

    def _overlays(self, inputs, hashes, root):
        """The ordered overlay indices of each input: a function of its pixels only."""
        excluded = self._matching_pool_index(inputs, hashes)
        streams = _mix(hashes ^ _mix(np.full(len(hashes), root, dtype=np.uint64)))
        return _draw_overlays(streams, len(self.pool_), self.n_overlays, excluded)

    def _blend_values(self, inputs, overlays):
        """Entropy in bits (or predicted label) of each blend, shape ``overlays.shape``."""
        n_inputs, n_blends = overlays.shape
        values = np.empty(overlays.shape, dtype=self._value_dtype())
        low, high = self.pixel_range_
        inputs_per_call = max(1, self.batch_size // n_blends)
        for part in iter_batches(n_inputs, inputs_per_call):
            blends = _superimpose(inputs[part], self.pool_, overlays[part], self.alpha, self.beta, low, high)
            proba = predict_proba_batches(self.model_, blends, batch_size=len(blends))
            proba = proba.reshape(part.stop - part.start, n_blends, -1)
            if self.statistic == "entropy":
                values[part] = entr(proba).sum(axis=2) / np.log(2)
            else:
                values[part] = proba.argmax(axis=2)
        return values

    def _matching_pool_index(self, X, hashes):
        """Index of the first pool image equal to each input, ``len(pool_)`` if none."""
        n_pool = len(self.pool_)
        excluded = np.full(len(X), n_pool, dtype=np.int64)
        sorted_hashes = self._pool_sorted_hashes
        first = np.searchsorted(sorted_hashes, hashes, side="left")
        last = np.searchsorted(sorted_hashes, hashes, side="right")
        for row in np.flatnonzero(last > first):
            image = np.asarray(X[row], dtype=np.float32)
            candidates = np.sort(self._pool_order[first[row] : last[row]])
            for candidate in candidates:
                if np.array_equal(self.pool_[candidate], image):
                    excluded[row] = candidate
                    break
        return excluded


# ---------------------------------------------------------------------- helpers


def _content_hashes(X):
    """64-bit hash of each image's float32 pixels (the same for uint8 and float input)."""
    hashes = np.empty(len(X), dtype=np.uint64)
    for chunk in iter_batches(len(X), _CONVERSION_CHUNK):
        # + 0.0 turns -0.0 into 0.0: equal pixels, equal bytes.
        block = np.ascontiguousarray(np.asarray(X[chunk], dtype=np.float32) + np.float32(0))
        for row, image in enumerate(block, start=chunk.start):
            digest = hashlib.blake2b(image.data, digest_size=8).digest()
            hashes[row] = int.from_bytes(digest, "little")
    return hashes


def _mix(x):
    """SplitMix64's finaliser on a uint64 array: well-spread 64-bit values."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform_draws(streams, counters):
    """The ``counters``-th 64-bit value of each row's stream (counter-based generator)."""
    return _mix(streams + (np.asarray(counters, dtype=np.uint64) + np.uint64(1)) * _GOLDEN)


def _draw_overlays(streams, n_pool, n_overlays, excluded):
    """``n_overlays`` distinct pool indices per row, in a random order, never ``excluded``.

    ``excluded[i] == n_pool`` means nothing to exclude. Row ``i`` depends only on
    ``streams[i]`` (from the input's pixels and the seed), the pool size and
    ``excluded[i]``, never on the other rows, so inputs can be batched in any way; its
    first ``m`` indices are a uniform random ordered sample for every ``m``.
    """
    streams = np.asarray(streams, dtype=np.uint64)
    n_rows = len(excluded)
    has_exclusion = excluded < n_pool
    if n_pool <= 4 * n_overlays:
        # Few candidates: sort random keys, the excluded image's key pushed last.
        rows_per_block = max(1, _DENSE_SAMPLER_KEYS // n_pool)
        out = np.empty((n_rows, n_overlays), dtype=np.int64)
        for block in iter_batches(n_rows, rows_per_block):
            keys = _uniform_draws(streams[block, np.newaxis], np.arange(n_pool)[np.newaxis])
            rows = np.flatnonzero(has_exclusion[block])
            keys[rows, excluded[block][rows]] = np.iinfo(np.uint64).max
            out[block] = np.argsort(keys, axis=1, kind="stable")[:, :n_overlays]
        return out
    # Many candidates: draw each slot in turn and redraw the rare repeats. An excluded
    # image is skipped by drawing from n_pool - 1 values and shifting those above it.
    high = np.where(has_exclusion, n_pool - 1, n_pool).astype(np.uint64)
    out = np.empty((n_rows, n_overlays), dtype=np.int64)
    for slot in range(n_overlays):
        attempt = np.zeros(n_rows, dtype=np.int64)
        rows = np.arange(n_rows)
        while len(rows):
            draws = (_uniform_draws(streams[rows], slot + n_overlays * attempt[rows]) % high[rows]).astype(np.int64)
            draws += draws >= excluded[rows]
            out[rows, slot] = draws
            repeated = (out[rows, :slot] == draws[:, np.newaxis]).any(axis=1)
            rows = rows[repeated]
            attempt[rows] += 1
    return out


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


def _statistic(values, statistic, n_classes):
    """Per-input score from per-blend entropies or labels of shape (n_inputs, n_blends)."""
    if statistic == "entropy":
        return values.mean(axis=1)
    n_inputs, n_blends = values.shape
    labels = values + n_classes * np.arange(n_inputs)[:, np.newaxis]
    counts = np.bincount(labels.ravel(), minlength=n_inputs * n_classes)
    agreement = counts.reshape(n_inputs, n_classes).max(axis=1) / n_blends
    return 1.0 - agreement
