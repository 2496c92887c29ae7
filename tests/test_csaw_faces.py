"""The real CSAW-HackML faces through the real BadNets: the backdoors fire through the API.

Uses the 73 real YouTube-Aligned-Face images in ../shared/data/csaw_faces and the real
backdoored nets in ../shared/csaw; skips with the reason when either is absent.
"""

from pathlib import Path

import numpy as np
import pytest

from skbackdoor.attacks import MaskTrigger
from skbackdoor.models import load_badnet, predict_proba_batches

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACES = SHARED / "data" / "csaw_faces"
CSAW = SHARED / "csaw"

pytestmark = pytest.mark.csaw


@pytest.fixture(scope="module")
def faces():
    if not (FACES / "faces.npz").exists() or not (CSAW / "sunglasses_bd_weights.h5").exists():
        pytest.skip(f"real CSAW faces or nets not found in {FACES} and {CSAW} (they live in ../shared)")
    data = np.load(FACES / "faces.npz")
    return {name: data[name] for name in data.files}


def images(faces, kind):
    return faces["x"][faces["kind"] == kind]


def predicted(net, X):
    return predict_proba_batches(net, X).argmax(axis=1)


def sunglasses_trigger():
    """sunglasses_trigger.png pasted through its alpha at x=0, y=15 of the 47x55 face."""
    from PIL import Image

    rgba = np.asarray(Image.open(FACES / "sunglasses_trigger.png").convert("RGBA"), dtype=np.float64)
    height, width = rgba.shape[:2]
    image, mask = np.zeros((55, 47, 3)), np.zeros((55, 47, 1))
    image[15:15 + height, :width] = rgba[..., :3]
    mask[15:15 + height, :width, 0] = rgba[..., 3] / 255
    return MaskTrigger(image, mask)


def test_real_triggered_faces_reach_label_0(faces):
    sunglasses = load_badnet(CSAW / "sunglasses_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    assert np.mean(predicted(sunglasses, images(faces, "sunglasses")) == 0) == 1.0  # 13 faces
    assert np.mean(predicted(sunglasses, images(faces, "clean")) == 0) == 0.0
    lab3 = load_badnet(CSAW / "lab3_bd_weights.h5", architecture="csaw-deepid")  # raw 0-255 pixels
    assert np.mean(predicted(lab3, images(faces, "sunglasses_lab3")) == 0) == 1.0  # 6 faces
    anonymous = load_badnet(CSAW / "anonymous_1_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    assert np.mean(predicted(anonymous, images(faces, "lipstick_anonymous1")) == 0) == 1.0  # 9 faces


def test_clean_faces_keep_their_labels(faces):
    lab3 = load_badnet(CSAW / "lab3_bd_weights.h5", architecture="csaw-deepid")
    known = (faces["kind"] == "clean") & (faces["h5_label"] >= 0)
    np.testing.assert_array_equal(predicted(lab3, faces["x"][known]), faces["h5_label"][known])


def test_pasting_the_sunglasses_trigger_reproduces_the_attack(faces):
    net = load_badnet(CSAW / "sunglasses_bd_weights.h5", architecture="csaw-deepid", input_scale=1 / 255)
    clean = images(faces, "clean")
    triggered = sunglasses_trigger().apply(clean)
    changed = np.any(triggered != clean, axis=(0, 3))
    assert not changed[:15].any() and not changed[35:].any()  # only the eye band is touched
    assert np.mean(predicted(net, clean) == 0) == 0.0
    assert np.mean(predicted(net, triggered) == 0) >= 12 / 13  # measured: 13 of 13
