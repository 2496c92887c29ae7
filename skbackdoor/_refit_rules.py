"""Refit rules for ``GridSearchCV``: the best score among candidates within a bound.

Re-exported by :mod:`skbackdoor.metrics` (:func:`best_cca_under_asr`,
:func:`best_far_under_frr`), next to the scorers whose negated rates they read.
"""

import numbers

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["best_cca_under_asr", "best_far_under_frr"]


class _Rate(Interval):
    """A rate in [0, 1]. Unlike ``Interval(Real, ...)`` it refuses ``True``/``False``,
    which scikit-learn's constraints accept as the numbers 1 and 0."""

    def __init__(self):
        super().__init__(numbers.Real, 0, 1, closed="both")

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


class _BestUnderBound:
    """``GridSearchCV`` refit rule: best ``maximize`` score among candidates whose
    negated ``bound`` score stays within ``max_value``."""

    def __init__(self, maximize, bound, max_value, factory):
        self.maximize = maximize
        self.bound = bound
        self.max_value = max_value
        self._factory = factory

    def __call__(self, cv_results):
        score = self._mean_scores(cv_results, self.maximize)
        rate = -self._mean_scores(cv_results, self.bound)
        if np.isnan(score).all() or np.isnan(rate).all():
            raise ValueError(
                f"Every candidate has a NaN mean '{self.maximize}' or '{self.bound}' "
                "score (all fits failed?); no candidate can be chosen."
            )
        qualifies = ~np.isnan(score) & (rate <= self.max_value)
        if qualifies.any():
            # Best score first, then the lower rate, then the earlier candidate.
            candidates = np.flatnonzero(qualifies)
            order = np.lexsort((candidates, rate[candidates], -score[candidates]))
            return int(candidates[order[0]])
        # No candidate meets the bound: the one closest to it, best score on ties.
        finite = ~np.isnan(rate)
        candidates = np.flatnonzero(finite)
        tie_break = np.where(np.isnan(score[candidates]), np.inf, -score[candidates])
        order = np.lexsort((candidates, tie_break, rate[candidates]))
        return int(candidates[order[0]])

    def _mean_scores(self, cv_results, key):
        column = f"mean_test_{key}"
        if column not in cv_results:
            prefix = "mean_test_"
            available = sorted(k[len(prefix) :] for k in cv_results if k.startswith(prefix))
            raise ValueError(
                f"cv_results_ has no '{column}': the search scored {available}. Use a "
                "scoring dict with these keys (e.g. backdoor_scoring(...)) or pass the "
                "key names."
            )
        return np.asarray(cv_results[column], dtype=np.float64)

    def __repr__(self):
        return self._factory


@validate_params(
    {"max_asr": [_Rate()], "cca_key": [str], "asr_key": [str]}, prefer_skip_nested_validation=True
)
def best_cca_under_asr(max_asr=0.02, *, cca_key="cca", asr_key="asr"):
    """Refit rule for ``GridSearchCV``: the best clean accuracy with ASR within a bound.

    Returns a callable for ``GridSearchCV(refit=...)``. Given ``cv_results_``, it picks
    the candidate with the highest mean CCA among those whose mean ASR is at most
    ``max_asr`` (ties: lower ASR, then earlier candidate). If no candidate meets the
    bound, it falls back to the candidate with the lowest mean ASR (ties: higher CCA),
    so the search still refits; check ``-cv_results_["mean_test_asr"][best_index_]``
    against ``max_asr`` to detect that case. Candidates whose scores are NaN (failed
    fits) are never preferred.

    The ASR column must hold negated rates, as :func:`make_asr_scorer` produces.

    Parameters
    ----------
    max_asr : float, default=0.02
        Highest acceptable attack success rate, in [0, 1].
    cca_key, asr_key : str, default="cca", "asr"
        Keys of the scoring dict (see :func:`backdoor_scoring`).

    Returns
    -------
    refit : callable
        ``refit(cv_results) -> int``, the index of the chosen candidate. Picklable.

    Examples
    --------
    >>> from skbackdoor.metrics import best_cca_under_asr
    >>> cv_results = {
    ...     "mean_test_cca": [0.98, 0.95, 0.90],
    ...     "mean_test_asr": [-0.90, -0.01, -0.00],
    ... }
    >>> best_cca_under_asr(max_asr=0.02)(cv_results)
    1
    """
    factory = f"best_cca_under_asr(max_asr={max_asr!r}, cca_key={cca_key!r}, asr_key={asr_key!r})"
    return _BestUnderBound(cca_key, asr_key, max_asr, factory)


@validate_params(
    {"max_frr": [_Rate()], "far_key": [str], "frr_key": [str]}, prefer_skip_nested_validation=True
)
def best_far_under_frr(max_frr=0.05, *, far_key="far", frr_key="frr"):
    """Refit rule for tuning a detector: the lowest FAR with FRR within a bound.

    The detection counterpart of :func:`best_cca_under_asr`, for the scoring of
    :func:`detection_scoring`: among candidates whose mean false rejection rate is at
    most ``max_frr`` it picks the lowest mean false acceptance rate (ties: lower FRR,
    then earlier candidate); if none qualifies, the lowest FRR (ties: lower FAR). Both
    columns must hold negated rates, as :func:`make_frr_scorer` and
    :func:`make_far_scorer` produce.

    Parameters
    ----------
    max_frr : float, default=0.05
        Highest acceptable false rejection rate, in [0, 1].
    far_key, frr_key : str, default="far", "frr"
        Keys of the scoring dict.

    Returns
    -------
    refit : callable
        ``refit(cv_results) -> int``. Picklable.

    Examples
    --------
    >>> from skbackdoor.metrics import best_far_under_frr
    >>> cv_results = {
    ...     "mean_test_far": [-0.02, -0.10, -0.40],
    ...     "mean_test_frr": [-0.20, -0.05, -0.01],
    ... }
    >>> best_far_under_frr(max_frr=0.05)(cv_results)
    1
    """
    factory = f"best_far_under_frr(max_frr={max_frr!r}, far_key={far_key!r}, frr_key={frr_key!r})"
    return _BestUnderBound(far_key, frr_key, max_frr, factory)
