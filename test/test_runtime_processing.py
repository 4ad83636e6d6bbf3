"""Letterboxing and its inverse, shared by every backend."""

from __future__ import annotations

import numpy as np
import pytest

from vltseg_core.runtime import processing


@pytest.mark.parametrize("size", [(100, 150), (64, 96), (37, 300), (400, 90), (640, 960)])
def test_letterbox_keeps_aspect_and_centres(size: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    plane, box = processing.letterbox(image, (64, 96), pad_value=(1, 2, 3))
    assert plane.shape == (3, 64, 96) and plane.dtype == np.uint8
    vh, vw = box.valid
    assert vh <= 64 and vw <= 96 and (vh == 64 or vw == 96)
    assert abs(vw / vh - size[1] / size[0]) < 0.1 * size[1] / size[0] + 2 / min(vh, vw)
    if box.top:  # padding rows carry the pad value
        assert tuple(plane[:, 0, 0]) == (1, 2, 3)


def test_restore_inverts_the_letterbox() -> None:
    box = processing.fit((300, 400), (64, 96))  # scale 0.2133, valid 64x85, left pad 5
    ids = np.zeros((64, 96), np.uint8)
    ids[:, box.left : box.left + box.valid[1] // 2] = 3  # left half of the image is class 3
    mask = processing.restore_mask(ids, box)
    assert mask.shape == (300, 400)
    assert (mask[:, :190] == 3).all() and (mask[:, 210:] == 0).all()
    conf = processing.restore_confidence(np.full((64, 96), 0.25, np.float32), box)
    assert conf.shape == (300, 400) and np.allclose(conf, 0.25)
    net_boxes = np.array([[box.left, box.top, box.left + 48, box.top + 32]], np.float32)
    boxes = processing.restore_boxes(net_boxes, box)
    assert np.allclose(boxes, [[0, 0, 48 / box.scale, 32 / box.scale]], atol=1e-3)


def test_boxes_are_clipped_to_the_image() -> None:
    box = processing.fit((50, 50), (64, 96))
    out = processing.restore_boxes(np.array([[-100, -100, 1000, 1000]], np.float32), box)
    assert out.tolist() == [[0, 0, 50, 50]]


def test_bgr_flag_flips_channels() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    batch, _ = processing.make_batch([image], (8, 8), (0, 0, 0), bgr=True)
    assert batch[0, 0].min() == 200 and batch[0, 2].max() == 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32)])
def test_rejects_non_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        processing.to_rgb(bad, bgr=False)
