"""Hungarian matching is optimal (equals brute force) and the criterion behaves."""

from __future__ import annotations

import itertools

import pytest
import torch

from vltseg_core.models.criterion import SetCriterion, semantic_to_instances, uncertain_point_coords
from vltseg_core.models.matcher import HungarianMatcher, assign, pairwise_dice, pairwise_sigmoid_ce, point_sample
from vltseg_core.models.transformer_decoder import DecoderOutput, MaskPredictions


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brute_force(cost: torch.Tensor) -> float:
    """Minimum over all injective assignments of targets (columns) to queries (rows)."""
    q, t = cost.shape
    return min(sum(cost[rows[j], j].item() for j in range(t)) for rows in itertools.permutations(range(q), t))


@pytest.mark.parametrize("seed", range(12))
def test_assign_equals_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q = int(torch.randint(2, 7, (1,), generator=g))
    t = int(torch.randint(1, q + 1, (1,), generator=g))
    cost = torch.randn(q, t, generator=g)
    rows, cols = assign(cost.numpy())
    assert len(rows) == t and len(set(rows.tolist())) == t and sorted(cols.tolist()) == list(range(t))
    assert cost[rows, cols].sum().item() == pytest.approx(_brute_force(cost), abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_matcher_cost_is_minimised(seed: int) -> None:
    """The full matcher (class + sampled mask BCE + dice costs) picks a min-cost assignment."""
    torch.manual_seed(seed)
    matcher = HungarianMatcher(num_points=256)
    logits, masks = torch.randn(1, 5, 4), torch.randn(1, 5, 8, 12)
    sem = torch.randint(0, 3, (32, 48))
    (labels,), (tmasks,) = semantic_to_instances([sem], 3)
    torch.manual_seed(100)
    cost = matcher.cost_matrix(logits[0], masks[0], labels, tmasks)
    torch.manual_seed(100)  # same random points
    ((rows, cols),), = matcher([(logits, masks)], [labels], [tmasks])
    assert cost[rows, cols].sum().item() == pytest.approx(_brute_force(cost), abs=1e-4)


def test_pairwise_costs_match_direct_formulas() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    ce, dice = pairwise_sigmoid_ce(logits, targets), pairwise_dice(logits, targets)
    for i in range(4):
        for j in range(3):
            direct = torch.nn.functional.binary_cross_entropy_with_logits(logits[i], targets[j])
            assert ce[i, j].item() == pytest.approx(direct.item(), abs=1e-5)
            p = logits[i].sigmoid()
            d = 1 - (2 * (p * targets[j]).sum() + 1) / (p.sum() + targets[j].sum() + 1)
            assert dice[i, j].item() == pytest.approx(d.item(), abs=1e-5)


def test_semantic_to_instances_skips_ignore() -> None:
    sem = torch.tensor([[0, 2, 255], [2, 2, 7]])
    (labels, empty), (masks, no_masks) = semantic_to_instances([sem, torch.full((2, 2), 255)], 5)
    assert labels.tolist() == [0, 2] and empty.tolist() == [] and no_masks.shape == (0, 2, 2)
    assert masks.sum().item() == 4 and masks[1].sum().item() == 3


def test_matcher_batches_layers_and_skips_empty_images() -> None:
    """All layers in one call equal one call per layer and image (same random points)."""
    torch.manual_seed(0)
    matcher = HungarianMatcher(num_points=128)
    sems = [torch.randint(0, 4, (16, 16)), torch.full((16, 16), 255), torch.randint(1, 3, (16, 16))]
    labels, tmasks = semantic_to_instances(sems, 4)
    layers = [(torch.randn(3, 6, 5), torch.randn(3, 6, 4, 4)) for _ in range(3)]
    torch.manual_seed(1)
    batched = matcher(layers, labels, tmasks)
    torch.manual_seed(1)  # cost matrices draw their points in layer-major, image order
    for per_layer, (logits, masks) in zip(batched, layers):
        for i, got in enumerate(per_layer):
            if i == 1:
                assert got[0].numel() == 0 and got[1].numel() == 0
                continue
            want = assign(matcher.cost_matrix(logits[i], masks[i], labels[i], tmasks[i]).numpy())
            assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_uncertain_points_prefer_boundaries() -> None:
    torch.manual_seed(0)
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :, 12:20] = 0.0  # uncertain band, 25 % of the area
    coords = uncertain_point_coords(logits, num_points=100, oversample_ratio=3, importance_sample_ratio=0.75)
    assert coords.shape == (1, 100, 2) and ((coords >= 0) & (coords <= 1)).all()
    sampled = point_sample(logits, coords)[0, 0].abs()
    assert sampled[:75].mean() < 1.0  # importance samples sit (almost all) on the band
    assert sampled[75:].mean() > 4.0  # the random rest mostly does not


def test_criterion_terms_weights_and_perfect_prediction() -> None:
    torch.manual_seed(0)
    k, q = 3, 6
    crit = SetCriterion(k, HungarianMatcher(num_points=512), num_points=512)
    sem = torch.zeros(32, 32, dtype=torch.long)
    sem[:16] = 1
    sem[20:, 20:] = 255
    good_logits = torch.full((1, q, k + 1), -10.0)
    good_logits[0, :, k] = 10.0  # no object
    good_logits[0, 0, 0], good_logits[0, 0, k] = 10.0, -10.0
    good_logits[0, 1, 1], good_logits[0, 1, k] = 10.0, -10.0
    good_masks = torch.full((1, q, 8, 8), -20.0)
    good_masks[0, 0, 4:] = 20.0
    good_masks[0, 0, 5:, 5:] = -20.0  # ignore pixels belong to no mask (Mask2Former semantics)
    good_masks[0, 1, :4] = 20.0
    aux = [MaskPredictions(torch.randn(1, q, k + 1), torch.randn(1, q, 8, 8))] * 2
    good = crit(DecoderOutput(good_logits, good_masks, aux), [sem])
    bad = crit(DecoderOutput(torch.randn(1, q, k + 1), torch.randn(1, q, 8, 8), aux), [sem])
    assert set(good) == {f"loss_{t}{s}" for t in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert good["loss_ce"] < 0.01 and good["loss_dice"] < 0.2 * bad["loss_dice"]
    # importance sampling puts 75 % of points on the blurred stride-4 mask borders
    assert good["loss_mask"] < 0.5 * bad["loss_mask"]
    assert good["loss_ce_0"] == pytest.approx(bad["loss_ce_0"].item())  # same aux inputs


def test_criterion_handles_images_without_targets() -> None:
    crit = SetCriterion(2, HungarianMatcher(num_points=64), num_points=64)
    logits = torch.randn(1, 4, 3, requires_grad=True)
    masks = torch.randn(1, 4, 8, 8, requires_grad=True)
    losses = crit(DecoderOutput(logits, masks, []), [torch.full((16, 16), 255)])
    sum(losses.values()).backward()
    assert torch.isfinite(torch.stack(list(losses.values()))).all() and masks.grad is not None
