"""The batched trigger search engine: its result object, chunking, and what it finds."""

import numpy as np
import pytest

from skbackdoor._trigger_search import TriggerSearchResult, _TriggerSearch, attack_success


def _search(patch_badnet, **kwargs):
    options = dict(pixel_range=(0.0, 16.0), batch_size=16, learning_rate=0.1, cost=1e-3, seed=0, verbose=0)
    return _TriggerSearch(patch_badnet.model, patch_badnet.X_val, **{**options, **kwargs})


@pytest.fixture(scope="module")
def searched(patch_badnet):
    return _search(patch_badnet).run([0, 3, 7], 150, desc="test")


def test_the_result_holds_one_trigger_per_label(searched):
    assert isinstance(searched, TriggerSearchResult)
    np.testing.assert_array_equal(searched.labels, [0, 3, 7])
    assert searched.masks.shape == (3, 8, 8) and searched.patterns.shape == (3, 8, 8, 1)
    assert searched.masks.dtype == np.float32 and searched.patterns.dtype == np.float32
    assert searched.masks.min() >= 0 and searched.masks.max() <= 1
    assert searched.patterns.min() >= 0 and searched.patterns.max() <= 16
    np.testing.assert_allclose(searched.norms, searched.masks.reshape(3, -1).sum(axis=1), rtol=1e-6)
    assert searched.found.dtype == bool and searched.cross_entropy.shape == (3,)


def test_the_backdoor_target_needs_the_smallest_trigger(patch_badnet, searched):
    assert searched.found[0]
    assert searched.norms[0] < 0.5 * min(searched.norms[1:])
    success = attack_success(patch_badnet.model, patch_badnet.X_val, patch_badnet.y_val, searched, seed=0)
    assert success.shape == (3,) and success[0] > 0.9


def test_a_label_does_not_depend_on_its_chunk(patch_badnet, searched):
    one_slot = _search(patch_badnet, pixels_per_step=1)
    assert one_slot.max_slots == 1
    alone = one_slot.run([3, 7, 0], 150, desc="test")
    np.testing.assert_array_equal(alone.labels, [3, 7, 0])
    np.testing.assert_allclose(alone.masks, searched.masks[[1, 2, 0]], atol=1e-5)
    np.testing.assert_array_equal(alone.found, searched.found[[1, 2, 0]])


def test_results_concatenate_field_by_field(searched):
    parts = [
        TriggerSearchResult(**{name: getattr(searched, name)[rows] for name in (
            "labels", "masks", "patterns", "norms", "found", "cross_entropy", "steps")})
        for rows in (slice(0, 1), slice(1, 3))
    ]
    joined = TriggerSearchResult.concatenate(parts)
    for name in ("labels", "masks", "patterns", "norms", "found", "cross_entropy", "steps"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(searched, name))


def test_every_label_runs_the_steps_without_early_stopping(searched):
    np.testing.assert_array_equal(searched.steps, [150, 150, 150])


def test_slots_are_balanced_across_waves(patch_badnet):
    # Room for 3 slots, 7 labels: 3 waves of at most 3 labels; 3 slots are needed.
    search = _search(patch_badnet, pixels_per_step=3 * 16 * 8 * 8)
    assert search.max_slots == 3
    result = search.run([0, 1, 2, 3, 4, 5, 6], 20, desc="test")
    np.testing.assert_array_equal(result.steps, [20] * 7)


def test_a_label_does_not_depend_on_when_it_got_its_slot(patch_badnet):
    # Two slots for five labels: labels enter as others leave, at different steps.
    pixels_of_two_slots = 2 * 16 * 8 * 8
    queued = _search(patch_badnet, pixels_per_step=pixels_of_two_slots, n_steps_no_change=20)
    assert queued.max_slots == 2
    together = _search(patch_badnet, n_steps_no_change=20)
    a = queued.run([0, 1, 2, 3, 4], 150, desc="test")
    b = together.run([0, 1, 2, 3, 4], 150, desc="test")
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.masks, b.masks, atol=1e-5)


def test_converged_labels_stop_early_and_keep_their_trigger(patch_badnet, searched):
    early = _search(patch_badnet, n_steps_no_change=20).run([0, 3, 7], 1000, desc="test")
    assert (early.steps <= 1000).all() and (early.steps < 1000).any()
    assert early.found[0]
    # The backdoor target still needs much the smallest trigger.
    assert early.norms[0] < 0.5 * min(early.norms[1:])
    np.testing.assert_allclose(early.norms[0], searched.norms[0], rtol=0.25)
