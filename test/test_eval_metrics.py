"""Metric arithmetic on hand-computable cases, NaN handling and the distributed reduce."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from vltseg_core.evaluation.metrics import ConfusionMatrix, confusion_matrix, metrics_from_matrix


def test_hand_computed_case():
    gt = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    mat = confusion_matrix(pred, gt, 3)
    assert mat.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0]]
    m = metrics_from_matrix(mat)
    # IoU: road 1/(2+2-1), class1 2/(2+3-2), class2 0/(1+0-0)
    np.testing.assert_allclose(m.iou, [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(m.acc, [0.5, 1.0, 0.0])
    assert m.mIoU == pytest.approx(1 / 3) and m.mAcc == pytest.approx(0.5)
    assert m.aAcc == pytest.approx(3 / 5)


def test_void_prediction_is_a_miss_but_no_false_positive():
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 255, 1, 7])  # 255 and an out-of-range id are "void"
    m = metrics_from_matrix(confusion_matrix(pred, gt, 3))
    np.testing.assert_allclose(m.iou[:2], [0.5, 0.5])
    assert math.isnan(m.iou[2]) and math.isnan(m.acc[2])  # class 2 absent from GT and pred
    assert m.mIoU == pytest.approx(0.5) and m.aAcc == pytest.approx(0.5)


def test_class_predicted_but_absent_has_zero_iou():
    m = metrics_from_matrix(confusion_matrix(torch.tensor([2, 1]), torch.tensor([1, 1]), 3))
    assert m.iou[2] == 0.0 and math.isnan(m.acc[2]) and math.isnan(m.iou[0])
    assert m.mIoU == pytest.approx(0.25)  # mean of IoU(1)=0.5 and IoU(2)=0


def test_class_subset_mean():
    mat = confusion_matrix(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 0]), 3)
    full, sub = metrics_from_matrix(mat), metrics_from_matrix(mat, classes=[1, 2])
    np.testing.assert_allclose(full.iou, sub.iou)
    assert sub.mIoU == pytest.approx((1.0 + 0.5) / 2)


def test_all_nan_and_empty():
    m = metrics_from_matrix(torch.zeros((3, 4), dtype=torch.int64))
    assert math.isnan(m.mIoU) and math.isnan(m.aAcc)
    assert m.as_dict(["a", "b", "c"])["mIoU"] is None


def test_accumulation_equals_one_shot_and_numpy_reference():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 6, (4, 16, 16), generator=g)
    gt[gt == 5] = 255
    pred = torch.randint(0, 5, (4, 16, 16), generator=g)
    cm = ConfusionMatrix(5)
    for b in range(4):
        cm.update(pred[b], gt[b])
    assert torch.equal(cm.mat, confusion_matrix(pred, gt, 5))
    ref = np.zeros((5, 5), np.int64)
    for t, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            ref[t, p] += 1
    np.testing.assert_array_equal(cm.matrix, ref)
    inter = np.diag(ref)
    union = ref.sum(0) + ref.sum(1) - inter
    np.testing.assert_allclose(cm.compute().iou, inter / union)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match=r"outside 0..1"):
        confusion_matrix(torch.zeros(2), torch.tensor([0, 5]), 2)


def test_custom_reduce_hook():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    cm.reduce(lambda t: t * 3)  # stands in for a sum over 3 identical ranks
    assert cm.mat.tolist() == [[3, 3, 0], [0, 0, 0]]


def _rank(rank: int, world: int, init: str, gt: torch.Tensor, pred: torch.Tensor, out: str):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cm = ConfusionMatrix(4)
    cm.update(pred[rank::world], gt[rank::world])
    cm.reduce()
    if rank == 0:
        torch.save(cm.mat, out)
    dist.destroy_process_group()


def test_distributed_reduce_equals_single_process(tmp_path):
    g = torch.Generator().manual_seed(1)
    gt = torch.randint(0, 4, (6, 8, 8), generator=g)
    pred = torch.randint(0, 4, (6, 8, 8), generator=g)
    out = str(tmp_path / "mat.pt")
    init = f"file://{tmp_path / 'rendezvous'}"
    tmp.spawn(_rank, args=(2, init, gt, pred, out), nprocs=2, join=True)
    assert torch.equal(torch.load(out, weights_only=True), confusion_matrix(pred, gt, 4))


def test_colorize_and_overlay_match_the_palette():
    """colorize = palette lookup (ids without a colour black, any palette length);
    overlay blends it and leaves ignore pixels as the image."""
    from vltseg_core.data.labels import palette
    from vltseg_core.evaluation.overlay import colorize, overlay

    rng = np.random.default_rng(0)
    label = rng.integers(0, 256, (64, 96)).astype(np.uint8)
    np.testing.assert_array_equal(colorize(label), palette()[label])
    short = rng.integers(0, 256, (5, 3)).astype(np.uint8)
    expected = np.zeros((256, 3), np.uint8)
    expected[:5] = short
    np.testing.assert_array_equal(colorize(label, short), expected[label])
    image = rng.integers(0, 256, (64, 96, 3)).astype(np.uint8)
    out = overlay(image, label, 0.5)
    ignore = label == 255
    np.testing.assert_array_equal(out[ignore], image[ignore])
    blend = (image.astype(np.float32) + palette()[label]) / 2
    assert np.abs(out[~ignore].astype(np.float32) - blend[~ignore]).max() <= 1
