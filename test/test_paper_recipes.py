"""The paper configs reproduce the reference recipes (github.com/VLTSeg/VLTSeg, MMSeg 1.2.2,
following Rein): sample sizes, padding, photometric steps, learning-rate schedule, test scales,
table averages, and no instance decoding for segmentation-only runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vltseg_core.data.base import target_arrays, torch_target
from vltseg_core.data.transforms import (PhotoMetricDistortion, RandomResize, collate,
                                         rescale_size)
from vltseg_core.evaluation.evaluator import averaged_targets, table_markdown, target_spec
from vltseg_core.evaluation.inference import InferenceSpec, network_size
from vltseg_core.train.config import ConfigError, TrainConfig, load_config
from vltseg_core.train.loader import build_dataset, normalise_batch, train_transform
from vltseg_core.train.optim import MMEnginePoly, build_scheduler

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# (config, source image (h, w) as the dataset ships it, size after Resize, crop)
PIPELINES = [
    ("gta5_to_cbm.yaml", (1052, 1914), (720, 1280), (512, 512)),
    ("synthia_to_cbm.yaml", (760, 1280), (720, 1280), (512, 512)),
    ("encoder_table/gta5_dinov2_b14.yaml", (1052, 1914), (720, 1280), (512, 512)),
    ("cityscapes_to_acdc.yaml", (1024, 2048), (1024, 2048), (1024, 1024)),
]


def _sample(hw: tuple[int, int], seed: int = 0):
    """A fully labelled image with 19 vertical class stripes (cat_max_ratio is met)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg = (np.arange(w)[None, :] * 19 // w).repeat(h, 0).astype(np.uint8)
    return image, target_arrays(seg)  # as sample_arrays gives it to the transforms


@pytest.mark.parametrize(("config", "source_hw", "resized_hw", "crop"), PIPELINES)
def test_paper_pipelines_give_the_reference_sample_sizes(config, source_hw, resized_hw, crop):
    """Resize to exactly the reference scale (no random ratio, no kept aspect), then crops of
    exactly the crop size: never padded, no ignore pixels added."""
    data = load_config(CONFIGS / config).data
    pipe = train_transform(data)
    resize = pipe.transforms[0]
    assert isinstance(resize, RandomResize) and resize.ratio_range is None and not resize.keep_ratio
    image, target = _sample(source_hw)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        resized, _ = resize(image, dict(target), rng)
        assert resized.shape[:2] == resized_hw
        out, tgt = pipe(image, target, np.random.default_rng(seed))
        assert out.shape[:2] == crop and tuple(tgt["sem_seg"].shape) == crop
        assert (tgt["sem_seg"] != 255).all()
        images, _, metas = collate([(out, tgt, {})], pad_to=data.crop_size)
        assert tuple(images.shape[-2:]) == crop and metas[0]["img_shape"] == crop  # no padding


def test_demo_keeps_its_own_random_keep_ratio_resize():
    data = load_config(CONFIGS / "demo.yaml").data
    resize = train_transform(data).transforms[0]
    assert resize.keep_ratio and resize.ratio_range == (0.75, 1.5) and resize.scale == (512, 256)


class Scripted:
    """A stand-in for ``np.random.Generator`` returning scripted draws and recording them."""

    def __init__(self, integers=(), uniform=()) -> None:
        self.ints, self.unis, self.calls = list(integers), list(uniform), []

    def integers(self, *args):
        self.calls.append(("integers", args))
        return self.ints.pop(0)

    def uniform(self, *args):
        self.calls.append(("uniform", args))
        return self.unis.pop(0)


def test_resize_scale_is_truncated_to_int_like_mmcv():
    image = np.zeros((100, 200, 3), np.uint8)
    t = {"sem_seg": np.zeros((100, 200), np.uint8), "boxes": np.zeros((0, 4), np.float32)}
    rng = Scripted(uniform=[0.49999])  # 2048 * 0.49999 = 1023.98 -> 1023; 1024 * r -> 511
    out, _ = RandomResize((2048, 1024), (0.5, 2.0), keep_ratio=False)(image, t, rng)
    assert out.shape[:2] == (511, 1023)
    assert rescale_size((1024, 2048), (1024, 512)) == (512, 1024)


def test_photometric_steps_cast_to_uint8_like_mmseg():
    """Scripted draws: brightness +10.7 (truncated), contrast x1.5 last (mode 0), no saturation
    or hue; every step rounds down to uint8 before the next."""
    image = np.array([[[100, 200, 3]]], np.uint8)
    rng = Scripted(integers=[1, 0, 0, 0, 1], uniform=[10.7, 1.5])
    out, _ = PhotoMetricDistortion()(image, {}, rng)
    bright = np.array([110, 210, 13], np.float32)  # uint8(100 + 10.7) = 110, not 111
    np.testing.assert_array_equal(out[0, 0], np.clip(bright * 1.5, 0, 255).astype(np.uint8))
    assert out.dtype == np.uint8


def test_photometric_hue_shift_is_drawn_from_minus_18_to_17():
    image = np.full((2, 2, 3), (200, 40, 40), np.uint8)
    rng = Scripted(integers=[0, 1, 0, 0, 1, 17], uniform=[])
    PhotoMetricDistortion()(image, {}, rng)
    hue_draw = rng.calls[-1]
    assert hue_draw == ("integers", (-18, 18))  # numpy: high is exclusive -> [-18, 17]
    assert np.random.default_rng(0).integers(-18, 18, 10000).max() == 17


def test_padding_equals_the_normalised_mean():
    """Batches padded by collate: the padding becomes 0 after normalisation (the mean)."""
    class Norm(torch.nn.Module):
        def preprocess(self, x):
            mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
            return (x.float() - mean) / 58.0

    small = (np.full((3, 5, 3), 50, np.uint8), torch_target(target_arrays(np.ones((3, 5)))), {})
    full = (np.full((4, 6, 3), 90, np.uint8), torch_target(target_arrays(np.ones((4, 6)))), {})
    images, targets, metas = collate([small, full], pad_to=(4, 4))
    assert images.shape == (2, 3, 4, 6)
    x = normalise_batch(Norm(), images, metas)
    assert (x[0, :, 3:] == 0).all() and (x[0, :, :, 5:] == 0).all()
    assert (x[0, :, :3, :5] != 0).all() and (x[1] == Norm().preprocess(images[1:])[0]).all()
    assert (targets[0]["sem_seg"][3:] == 255).all()


def _mmengine_chain(base: float, iters: int, begin: int, power: float) -> list[float]:
    """mmengine ParamScheduler.step + PolyLR._get_value, iteration by iteration: the lr each
    iteration trains with (the scheduler steps after every iteration)."""
    lrs, lr, last_step, total = [], base, -1, iters - begin - 1
    for global_step in range(iters):
        if begin <= global_step < iters:
            last_step += 1
            if last_step > 0:
                lr = lr * (1 - 1 / (total - last_step + 1)) ** power
        lrs.append(lr)
    return lrs


def test_lr_schedule_is_mmengine_polylr_from_iteration_500():
    cfg = load_config(CONFIGS / "gta5_to_cbm.yaml").train
    assert (cfg.poly_begin, cfg.poly_power, cfg.warmup_iters, cfg.lr) == (500, 0.9, 0, 1e-4)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    ours = []
    for _ in range(cfg.iters):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ref = _mmengine_chain(cfg.lr, cfg.iters, 500, 0.9)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    assert ours[:501] == [1e-4] * 501 and ours[-1] == 0.0
    assert MMEnginePoly(10, 2, 1.0)(2) == 1.0 and MMEnginePoly(10, 2, 1.0)(9) == 0.0


def test_poly_begin_excludes_warmup_and_must_leave_decay_steps():
    with pytest.raises(ConfigError, match="train.warmup_iters: must be 0 with train.poly_begin"):
        load_config(CONFIGS / "gta5_to_cbm.yaml", ["train.warmup_iters=10"])
    with pytest.raises(ConfigError, match=r"train.poly_begin: must be in \[0, train.iters - 1\)"):
        load_config(CONFIGS / "gta5_to_cbm.yaml", ["train.iters=400"])
    assert TrainConfig().poly_begin is None  # the demo keeps the mmcv-1.x poly + warm-up


@pytest.mark.parametrize(("target", "image_hw", "network_hw"), [
    ("cityscapes", (1024, 2048), (512, 1024)),
    ("bdd", (720, 1280), (512, 910)),
    ("mapillary", (3024, 4032), (512, 683)),  # short side 512 for aspect <= 2
    ("mapillary", (1000, 2600), (394, 1024)),  # wider than 2:1: the long side limits
])
def test_synthetic_source_test_scales(target, image_hw, network_hw):
    cfg = load_config(CONFIGS / "gta5_to_cbm.yaml")
    assert (cfg.eval.mode, cfg.eval.crop_size, cfg.eval.stride) == ("slide", (512, 512), (426, 426))
    spec = target_spec(InferenceSpec.from_config(cfg.eval),
                       next(t for t in cfg.eval.targets if t.title == target))
    assert network_size(image_hw, spec) == network_hw


def test_acdc_average_leaves_the_pooled_column_out():
    cfg = load_config(CONFIGS / "cityscapes_to_acdc.yaml")
    assert averaged_targets(cfg) == ["fog", "night", "rain", "snow"]
    row = {"fog": 0.7, "night": 0.5, "rain": 0.7, "snow": 0.7, "acdc_all": 0.1}
    md = table_markdown({"run": {k: {"mIoU": v} for k, v in row.items()}}, averaged_targets(cfg))
    assert "| run | 70.0 | 50.0 | 70.0 | 70.0 | 10.0 | 65.0 |" in md
    assert "Avg. over fog, night, rain, snow." in md
    spec = target_spec(InferenceSpec.from_config(cfg.eval), cfg.eval.targets[0])
    assert network_size((1080, 1920), spec) == (1080, 1920)


def test_base_lists_merge_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {iters: 7, lr: 0.5}\nmodel: {preset: vltseg_tiny_m2f}\n")
    (tmp_path / "b.yaml").write_text("train: {iters: 9}\nmodel: {options: {freeze_blocks: 2}}\n")
    (tmp_path / "c.yaml").write_text("_base_: [a.yaml, b.yaml]\nname: c\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.train.iters, cfg.train.lr, cfg.model.preset) == (9, 0.5, "vltseg_tiny_m2f")
    assert cfg.model.options == {"freeze_blocks": 2}
    (tmp_path / "d.yaml").write_text("_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match="_base_ must be a file name or a list"):
        load_config(tmp_path / "d.yaml")


def test_segmentation_runs_do_not_decode_instances(tmp_path_factory, monkeypatch):
    """Cityscapes-layout data with instance maps: a seg-only loader never reads them."""
    from train_helpers import synth_root

    from vltseg_core.data.base import SegDataset
    from vltseg_core.train.config import DatasetSpec

    root = synth_root(tmp_path_factory)
    reads = []
    original = SegDataset.read_instances
    monkeypatch.setattr(SegDataset, "read_instances",
                        lambda self, rec: reads.append(rec) or original(self, rec))
    spec = DatasetSpec("cityscapes", str(root), "train")
    seg_only = build_dataset(spec, boxes=False)
    seg_only[0]
    assert reads == []
    with_boxes = build_dataset(spec, boxes=True)
    _, target, _ = with_boxes[0]
    assert len(reads) == 1 and "boxes" in target
    acdc = build_dataset(DatasetSpec("acdc", str(root), "val"), boxes=False)  # takes it too
    acdc[0]
    assert len(reads) == 1
