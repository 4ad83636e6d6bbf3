"""Augmentation: boxes follow the pixels, mmseg's cat_max_ratio retry rule, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vltseg_core.data.base import boxes_from_instance_map, target_arrays, torch_target
from vltseg_core.data.labels import cityscapes_lut, thing_train_ids
from vltseg_core.data.synth_objects import render_scene
from vltseg_core.data.transforms import (
    Compose,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    collate,
    train_transforms,
)
from vltseg_core.train.sampling import SeededSamples


def _scene_sample(seed: int):
    s = render_scene(np.random.default_rng([5, seed]), 256, 128)
    lut = cityscapes_lut()
    keep = thing_train_ids()
    boxes, labels = boxes_from_instance_map(s.inst, lut, keep)
    ids = np.unique(s.inst[s.inst >= 1000])
    ids = ids[np.isin(lut[ids // 1000], keep)]
    target = target_arrays(lut[s.label], boxes, labels)
    target["instances"] = s.inst.astype(np.int32)
    target["instance_ids"] = ids.astype(np.int64)
    return s.image.astype(np.uint8), target


@pytest.mark.parametrize("seed", range(12))
def test_boxes_cover_instance_pixels(seed):
    image, target = _scene_sample(seed)
    pipe = train_transforms(crop_size=(96, 128), scale=(256, 128))
    out_img, out = pipe(image, target, np.random.default_rng(seed))
    h, w = out_img.shape[:2]  # at most the crop: smaller resized images are not padded here
    assert h <= 96 and w <= 128 and out["sem_seg"].shape == (h, w)
    inst = out["instances"].numpy()
    boxes = out["boxes"].numpy()
    assert len(boxes) == len(out["labels"]) == len(out["instance_ids"])
    present = set(np.unique(inst[inst >= 1000]).tolist())
    assert present <= set(out["instance_ids"].tolist())  # a visible instance keeps its box
    for box, lab, k in zip(boxes, out["labels"].tolist(), out["instance_ids"].tolist()):
        assert box[2] > box[0] and box[3] > box[1]
        assert (box >= 0).all() and box[2] <= w and box[3] <= h
        assert lab == cityscapes_lut()[k // 1000]
        ys, xs = np.nonzero(inst == k)
        if len(xs) == 0:
            continue  # box rectangle still intersects the crop though the pixels left it
        ext = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        assert (ext[:2] >= box[:2] - 1).all() and (ext[2:] <= box[2:] + 1).all(), (box, ext)
        # the pixels agree with the semantic map too
        assert (out["sem_seg"].numpy()[inst == k] == lab).all()


def test_flip_mirrors_boxes():
    image, target = _scene_sample(0)
    flip = Compose([RandomFlip(prob=1.0)])
    img2, t2 = flip(image, target, 0)
    np.testing.assert_array_equal(img2, image[:, ::-1])
    b, b2 = target["boxes"], t2["boxes"].numpy()
    np.testing.assert_allclose(b2[:, 0], 256 - b[:, 2])
    np.testing.assert_allclose(b2[:, 2], 256 - b[:, 0])
    np.testing.assert_allclose(b2[:, [1, 3]], b[:, [1, 3]])


def test_resize_follows_mmcv_rescale():
    image = np.zeros((1024, 2048, 3), np.uint8)
    t = target_arrays(np.zeros((1024, 2048), np.uint8), np.array([[100, 50, 300, 250]]),
                      np.array([13]))
    img, out = Compose([RandomResize((2048, 512), (1.0, 1.0))])(image, t, 0)
    assert img.shape == (512, 1024, 3) and out["sem_seg"].shape == (512, 1024)
    assert out["boxes"].tolist() == [[50, 25, 150, 125]]


class CountingRng:
    """Delegates to a numpy Generator and counts ``integers`` calls (2 per crop window)."""

    def __init__(self, seed: int) -> None:
        self.g, self.calls = np.random.default_rng(seed), 0

    def integers(self, *a, **k):
        self.calls += 1
        return self.g.integers(*a, **k)


def test_cat_max_ratio_retries_ten_times_then_keeps_last():
    crop = RandomCrop((8, 8), cat_max_ratio=0.75)
    one_class = {"sem_seg": np.zeros((32, 32), np.uint8), "boxes": np.zeros((0, 4), np.float32),
                 "labels": np.zeros(0, np.int64)}
    rng = CountingRng(0)
    img, t = crop(np.zeros((32, 32, 3), np.uint8), one_class, rng)
    assert rng.calls == 2 * 11 and t["sem_seg"].shape == (8, 8)
    stripes = dict(one_class, sem_seg=(np.arange(32)[None, :] % 2).repeat(32, 0).astype(np.uint8))
    rng = CountingRng(0)
    crop(np.zeros((32, 32, 3), np.uint8), stripes, rng)
    assert rng.calls == 2  # first window already has two classes at 50 % each


def test_cat_max_ratio_raises_acceptance():
    """Only windows touching the right third are mixed; retries make them very likely."""
    seg = np.zeros((64, 192), np.uint8)
    seg[:, 150:] = np.arange(42)[None, :] % 3 + 1
    sample = {"sem_seg": seg, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0)}
    rule = RandomCrop((64, 64), 0.75)

    def rate(ratio: float) -> float:
        crop = RandomCrop((64, 64), ratio)
        hits = [rule.acceptable(crop(np.zeros((64, 192, 3), np.uint8), dict(sample),
                                     np.random.default_rng(s))[1]["sem_seg"]) for s in range(300)]
        return float(np.mean(hits))

    plain, retried = rate(1.0), rate(0.75)
    assert plain < 0.35 and retried > 0.9


def test_focus_crops_hold_a_focus_pixel_at_the_border_and_default_is_mmseg():
    """A person in the frame's corner: uniform windows rarely see it, focus windows always
    do when drawn (focus_prob 1); focus_prob 0 draws exactly mmseg's windows."""
    seg = np.ones((64, 256), np.uint8)
    seg[50:60, 2:6] = 11
    sample = {"sem_seg": seg, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0)}
    img = np.zeros((64, 256, 3), np.uint8)

    def hits(crop: RandomCrop) -> float:
        return float(np.mean([(crop(img, dict(sample), np.random.default_rng(s))[1]["sem_seg"]
                               == 11).any() for s in range(200)]))

    assert hits(RandomCrop((64, 64), 1.0)) < 0.15
    focus = RandomCrop((64, 64), 1.0, focus_classes=(11, 12), focus_prob=1.0)
    assert hits(focus) == 1.0
    assert {focus(img, dict(sample), np.random.default_rng(s))[1]["sem_seg"].shape
            for s in range(20)} == {(64, 64)}
    half = RandomCrop((64, 64), 1.0, focus_classes=(11,), focus_prob=0.5)
    assert 0.35 < hits(half) < 0.7
    absent = RandomCrop((64, 64), 1.0, focus_classes=(12,), focus_prob=1.0)
    assert 0 < hits(absent) < 0.15  # no rider in the frame: a uniform window instead
    for s in range(20):
        a = RandomCrop((64, 64), 0.75)(img, dict(sample), np.random.default_rng(s))
        b = RandomCrop((64, 64), 0.75, focus_classes=(11,), focus_prob=0.0)(
            img, dict(sample), np.random.default_rng(s))
        assert np.array_equal(a[1]["sem_seg"], b[1]["sem_seg"])


def test_ignore_pixels_do_not_count():
    rule = RandomCrop((4, 4), 0.75)
    seg = np.full((4, 4), 255, np.uint8)
    seg[0, :2] = [1, 2]  # two classes, 50 % each of the labelled pixels
    assert rule.acceptable(seg)
    seg[0, 1] = 1
    assert not rule.acceptable(seg)


def test_deterministic_and_generator_types():
    image, target = _scene_sample(3)
    pipe = train_transforms(crop_size=(64, 64), scale=(256, 128))
    a = pipe(image, target, np.random.default_rng(7))
    b = pipe(image, target, np.random.default_rng(7))
    c = pipe(image, target, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert not np.array_equal(a[0], c[0])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    np.testing.assert_array_equal(pipe(image, target, g1)[0], pipe(image, target, g2)[0])


def test_photometric_changes_colour_only():
    image, target = _scene_sample(1)
    ident = PhotoMetricDistortion(0, (1.0, 1.0), (1.0, 1.0), 0)
    same, _ = ident(image, {}, np.random.default_rng(0))
    assert np.abs(same.astype(int) - image).max() <= 3  # HSV round trip only
    changed = [PhotoMetricDistortion()(image, {}, np.random.default_rng(s))[0] for s in range(8)]
    assert sum(not np.array_equal(x, image) for x in changed) >= 6


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        image, target, meta = self.sample_arrays(i)
        return image, torch_target(target), meta

    def sample_arrays(self, i):
        image, target = _scene_sample(i)
        return image, target, {"name": f"toy{i}"}


def test_seeded_samples_depend_on_seed_epoch_index_only():
    ds = SeededSamples(_Toy(), train_transforms((64, 96), (256, 128)), seed=3)
    first = [ds[0, i][0] for i in (2, 0, 1)]
    again = [ds[0, i][0] for i in (0, 1, 2)]
    np.testing.assert_array_equal(first[0], again[2])  # order of access does not matter
    assert not np.array_equal(ds[1, 2][0], again[2])  # the epoch travels with the key


def test_collate_pads_and_stacks():
    a = (np.full((4, 6, 3), 7, np.uint8), torch_target(target_arrays(np.ones((4, 6)))), {"n": 0})
    b = (np.full((5, 3, 3), 9, np.uint8), torch_target(target_arrays(np.ones((5, 3)))), {"n": 1})
    images, targets, metas = collate([a, b])
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 5, 6)
    assert (images[0, :, 4:] == 0).all() and (images[0, :, :4, :] == 7).all()
    assert (targets[1]["sem_seg"][:, 3:] == 255).all() and (targets[1]["sem_seg"][:, :3] == 1).all()
    assert metas[1]["img_shape"] == (5, 3)
