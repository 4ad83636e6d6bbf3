"""Every loader on fixtures written in its official layout (see data_layouts.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_layouts import (
    H,
    W,
    make_acdc,
    make_bdd,
    make_cityscapes,
    make_coco,
    make_gta5,
    make_mapillary,
    make_synthia,
)

from vltseg_core.data.datasets import DATASETS, build_dataset
from vltseg_core.data.labels import (
    VISTAS_V12_NAMES,
    cityscapes_lut,
    mapillary_lut,
    synthia_lut,
)


def _check_sample(sample, h=H, w=W):
    img, target, meta = sample
    assert img.dtype == np.uint8 and img.shape == (h, w, 3)
    assert target["sem_seg"].dtype == torch.int64 and target["sem_seg"].shape == (h, w)
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert target["labels"].dtype == torch.int64
    assert len(target["labels"]) == len(target["boxes"])
    assert "file" in meta and "name" in meta
    return img, target, meta


@pytest.mark.parametrize("train_ids", [True, False])
def test_cityscapes_labels_and_boxes(tmp_path, train_ids):
    written = make_cityscapes(tmp_path, "val", n=3, train_ids=train_ids)
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 3
    by_name = {core: (ids, exp) for core, ids, exp in written}
    for i in range(len(ds)):
        img, target, meta = _check_sample(ds[i])
        ids, expected = by_name[meta["name"]]
        assert meta["label_file"].endswith("labelTrainIds.png" if train_ids else "labelIds.png")
        np.testing.assert_array_equal(target["sem_seg"].numpy(), cityscapes_lut()[ids])
        # caravan (29) and unlabeled/parking are ignore; road (7) is train id 0
        assert set(np.unique(target["sem_seg"].numpy()[ids == 29])) == {255}
        assert set(np.unique(target["sem_seg"].numpy()[ids == 7])) == {0}
        got = sorted(zip(target["labels"].tolist(), target["boxes"].tolist()))
        assert got == sorted((t, [float(v) for v in b]) for t, b in expected)


def test_cityscapes_image_roundtrip(tmp_path):
    make_cityscapes(tmp_path, "train", n=1)
    img, _, _ = build_dataset("cityscapes", tmp_path, "train")[0]
    np.testing.assert_array_equal(img, np.random.default_rng(0).integers(0, 256, (H, W, 3),
                                                                           dtype=np.uint8))


def test_acdc_conditions(tmp_path):
    make_acdc(tmp_path, ("fog", "night"), n=2)
    make_acdc(tmp_path, ("snow",), n=3, train_ids=False)
    both = build_dataset("acdc", tmp_path, "val", conditions=("fog", "night"))
    assert len(both) == 4
    assert {both.meta(i, (H, W))["condition"] for i in range(4)} == {"fog", "night"}
    snow = build_dataset("acdc", tmp_path, "val", conditions="snow")
    assert len(snow) == 3
    _, t, m = _check_sample(snow[0])
    assert m["label_file"].endswith("_gt_labelIds.png")
    assert set(t["sem_seg"].unique().tolist()) <= set(range(19)) | {255}


def test_gta5_palette_labels_and_size_mismatch(tmp_path):
    labels = make_gta5(tmp_path, n=3, mismatch=1)
    ds = build_dataset("gta5", tmp_path, "all")
    assert [r.name for r in ds.records] == ["00001", "00002", "00003"]
    img, t, _ = ds[0]  # image 26x36, label 24x32 -> label resized onto the image
    assert img.shape[:2] == (H + 2, W + 4) and t["sem_seg"].shape == (H + 2, W + 4)
    _, t2, _ = ds[1]  # palette indices are label ids (not palette colours)
    np.testing.assert_array_equal(t2["sem_seg"].numpy(), cityscapes_lut()[labels[1]])
    crop = build_dataset("gta5", tmp_path, "all", size_mismatch="crop")[0][1]["sem_seg"].numpy()
    np.testing.assert_array_equal(crop[:H, :W], cityscapes_lut()[labels[0]])
    assert (crop[H:] == 255).all() and (crop[:, W:] == 255).all()


def test_gta5_split_mat(tmp_path):
    from scipy.io import savemat

    make_gta5(tmp_path, n=3, mismatch=None)
    savemat(str(tmp_path / "split.mat"), {"trainIds": np.array([[1], [3]]),
                                          "valIds": np.array([[2]]), "testIds": np.array([[2]])})
    assert [r.name for r in build_dataset("gta5", tmp_path, "train").records] == ["00001", "00003"]
    assert [r.name for r in build_dataset("gta5", tmp_path, "val").records] == ["00002"]


def test_synthia_16bit(tmp_path):
    written = make_synthia(tmp_path, n=2)
    ds = build_dataset("synthia", tmp_path, "all")
    _, t, _ = _check_sample(ds[0])
    cls, _ = written[0]
    expected = synthia_lut()[np.minimum(cls, 255)]
    np.testing.assert_array_equal(t["sem_seg"].numpy(), expected)
    assert t["sem_seg"][0, 0] == 255  # class value 300 is not a valid id
    assert t["sem_seg"][5, 3] == 11 and t["sem_seg"][15, 15] == 13  # pedestrian, car
    got = sorted(zip(t["labels"].tolist(), t["boxes"].tolist()))
    assert got == [(11, [2.0, 4.0, 6.0, 9.0]), (13, [10.0, 12.0, 18.0, 20.0])]


@pytest.mark.parametrize("official", [True, False])
def test_bdd100k_layouts(tmp_path, official):
    written = make_bdd(tmp_path, official=official, n=2)
    ds = build_dataset("bdd100k", tmp_path, "val")
    assert len(ds) == 2
    _, t, _ = _check_sample(ds[1])
    np.testing.assert_array_equal(t["sem_seg"].numpy(), written[1])


@pytest.mark.parametrize("v12", [True, False])
def test_mapillary(tmp_path, v12):
    written = make_mapillary(tmp_path, v12=v12)
    ds = build_dataset("mapillary", tmp_path, "val")
    _, t, _ = _check_sample(ds[0])
    np.testing.assert_array_equal(t["sem_seg"].numpy(), mapillary_lut()[written[0]])
    lut = mapillary_lut()
    assert lut[VISTAS_V12_NAMES.index("construction--flat--road")] == 0
    assert lut[VISTAS_V12_NAMES.index("human--rider--motorcyclist")] == 12
    assert lut[VISTAS_V12_NAMES.index("object--vehicle--on-rails")] == 16
    assert lut[VISTAS_V12_NAMES.index("void--unlabeled")] == 255


def test_mapillary_config_overrides_order(tmp_path):
    written = make_mapillary(tmp_path)
    names = list(reversed(VISTAS_V12_NAMES))  # a config with a different index order
    (tmp_path / "config_v1.2.json").write_text(json.dumps({"labels": [{"name": n} for n in names]}))
    _, t, _ = build_dataset("mapillary", tmp_path, "val")[0]
    np.testing.assert_array_equal(t["sem_seg"].numpy(), mapillary_lut(tuple(names))[written[0]])


def test_coco_detection(tmp_path):
    make_coco(tmp_path)
    ds = build_dataset("coco", tmp_path, "val2017")
    img, t, meta = _check_sample(ds[0])
    assert meta["image_id"] == 1 and (t["sem_seg"] == 255).all()
    # crowd and 'bottle' dropped; xywh -> xyxy; person=11, car=13
    assert t["labels"].tolist() == [11, 13]
    assert t["boxes"].tolist() == [[1, 2, 11, 7], [4, 4, 10, 10]]
    assert ds[1][1]["labels"].tolist() == [17]


def test_registry_is_plain_dict():
    assert set(DATASETS) == {"cityscapes", "acdc", "gta5", "synthia", "bdd100k", "mapillary",
                             "coco"}



@pytest.mark.parametrize("name", ["cityscapes", "coco"])
def test_training_augments_the_uint8_label_map_and_widens_only_the_crop(tmp_path, monkeypatch, name):
    """One path per job: training takes ``sample_arrays`` (label map uint8 as decoded) through
    the transforms and converts the crop once; evaluation's ``dataset[i]`` is the same sample."""
    from vltseg_core.data.transforms import train_transforms
    from vltseg_core.train.sampling import SeededSamples

    if name == "coco":
        make_coco(tmp_path)
        ds = build_dataset("coco", tmp_path, "val2017")
    else:
        make_cityscapes(tmp_path, "train", n=1)
        ds = build_dataset("cityscapes", tmp_path, "train")
    image, target, meta = ds[0]
    arrays = ds.sample_arrays(0)
    np.testing.assert_array_equal(arrays[0], image)
    assert arrays[2] == meta
    for key, value in arrays[1].items():
        np.testing.assert_array_equal(value, target[key].numpy())
    seen = []
    pipe = train_transforms(crop_size=(16, 16), scale=(64, 32))

    def recording(image, target, rng):
        seen.append({k: (type(v).__name__, str(v.dtype)) for k, v in target.items()})
        return pipe(image, target, rng)

    monkeypatch.setattr(type(ds), "__getitem__", lambda *a: pytest.fail("training read dataset[i]"))
    _, out, _ = SeededSamples(ds, recording, seed=0)[0, 0]
    assert seen == [{"sem_seg": ("ndarray", "uint8"), "boxes": ("ndarray", "float32"),
                     "labels": ("ndarray", "int64")}]
    assert out["sem_seg"].dtype == torch.int64 and tuple(out["sem_seg"].shape) == (16, 16)
