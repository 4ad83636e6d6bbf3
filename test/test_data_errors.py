"""Bad input gives one DatasetError that names the file/folder and what is wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_layouts import make_acdc, make_bdd, make_cityscapes, make_coco, make_gta5, write_gray

from vltseg_core.data.datasets import build_dataset
from vltseg_core.data.io import DatasetError


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"Cityscapes root does not exist: .*nope"):
        build_dataset("cityscapes", tmp_path / "nope", "val")


def test_empty_root(tmp_path):
    with pytest.raises(DatasetError, match=r"Cityscapes root is empty"):
        build_dataset("cityscapes", tmp_path, "val")


def test_unknown_split_lists_found(tmp_path):
    make_cityscapes(tmp_path, "train", n=1)
    with pytest.raises(DatasetError, match=r"split 'val' not found .*\['train'\]"):
        build_dataset("cityscapes", tmp_path, "val")


def test_split_without_labels(tmp_path):
    make_cityscapes(tmp_path, "val", n=1)
    (tmp_path / "leftImg8bit" / "test" / "x").mkdir(parents=True)
    (tmp_path / "leftImg8bit" / "test" / "x" / "x_000000_000000_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"split 'test' has no labels: missing .*gtFine.test"):
        build_dataset("cityscapes", tmp_path, "test")


def test_one_label_missing_names_image(tmp_path):
    written = make_cityscapes(tmp_path, "val", n=3)
    core = written[1][0]
    for p in (tmp_path / "gtFine" / "val").rglob(f"{core}_gtFine_label*"):
        p.unlink()
    with pytest.raises(DatasetError, match=rf"1 of 3 images have no label .*{core}_leftImg8bit"):
        build_dataset("cityscapes", tmp_path, "val")


def test_unreadable_image(tmp_path):
    make_cityscapes(tmp_path, "val", n=1)
    img = next((tmp_path / "leftImg8bit").rglob("*.png"))
    img.write_bytes(b"not a png at all")
    ds = build_dataset("cityscapes", tmp_path, "val")
    with pytest.raises(DatasetError, match=rf"cannot read image .*{img.name}: not a readable"):
        ds[0]


def test_unreadable_label(tmp_path):
    make_cityscapes(tmp_path, "val", n=1)
    lab = next((tmp_path / "gtFine").rglob("*labelTrainIds.png"))
    lab.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=rf"cannot read label .*{lab.name}"):
        build_dataset("cityscapes", tmp_path, "val")[0]


def test_colour_label_rejected(tmp_path):
    """A 3-channel label (e.g. *_color.png by mistake) must not be read as ids."""
    make_cityscapes(tmp_path, "val", n=1)
    lab = next((tmp_path / "gtFine").rglob("*labelTrainIds.png"))
    write_gray(lab, np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"has mode RGB; expected a 1-channel map"):
        build_dataset("cityscapes", tmp_path, "val")[0]


def test_size_mismatch_cityscapes(tmp_path):
    make_cityscapes(tmp_path, "val", n=1)
    lab = next((tmp_path / "gtFine").rglob("*labelTrainIds.png"))
    write_gray(lab, np.zeros((10, 12), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch: image .* is 32x24 but label .* 12x10"):
        build_dataset("cityscapes", tmp_path, "val")[0]


def test_size_mismatch_gta5_error_policy(tmp_path):
    make_gta5(tmp_path, n=2, mismatch=2)
    ds = build_dataset("gta5", tmp_path, "all", size_mismatch="error")
    ds[0]
    with pytest.raises(DatasetError, match=r"size mismatch: image .*00002.png"):
        ds[1]


def test_gta5_split_needs_split_mat(tmp_path):
    make_gta5(tmp_path, n=1, mismatch=None)
    with pytest.raises(DatasetError, match=r"needs .*split.mat"):
        build_dataset("gta5", tmp_path, "train")


def test_acdc_bad_condition_and_missing_gt(tmp_path):
    make_acdc(tmp_path, ("fog",), n=1)
    with pytest.raises(DatasetError, match=r"conditions must be among"):
        build_dataset("acdc", tmp_path, "val", conditions=("haze",))
    with pytest.raises(DatasetError, match=r"rgb_anon/night does not exist: .*rgb_anon.night"):
        build_dataset("acdc", tmp_path, "val", conditions=("fog", "night"))


def test_acdc_labels_missing_name_condition_and_image(tmp_path):
    """ACDC shares Cityscapes' record builder: the same two errors, naming condition/split."""
    make_acdc(tmp_path, ("fog", "snow"), n=2)
    lab = next((tmp_path / "gt" / "snow" / "val").rglob("*_gt_label*Ids.png"))
    core = lab.name.split("_gt_")[0]
    for p in lab.parent.glob(f"{core}_gt_label*"):
        p.unlink()
    with pytest.raises(DatasetError, match=rf"ACDC snow/val: 1 of 2 images have no label "
                                           rf"\(\*_gt_label\*Ids.png\), e.g. none for .*{core}_rgb_anon"):
        build_dataset("acdc", tmp_path, "val", conditions=("fog", "snow"))
    shutil.rmtree(tmp_path / "gt" / "fog" / "val")
    with pytest.raises(DatasetError, match=r"ACDC fog/val has no labels: missing .*gt.fog.val"):
        build_dataset("acdc", tmp_path, "val", conditions=("fog",))


def test_bdd_unknown_layout(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetError, match=r"neither images/10k .* nor seg/"):
        build_dataset("bdd100k", tmp_path, "val")


def test_bdd_split_without_labels(tmp_path):
    import shutil

    make_bdd(tmp_path, official=True, split="test", n=1)
    shutil.rmtree(tmp_path / "labels" / "sem_seg" / "masks" / "test")
    with pytest.raises(DatasetError, match=r"split 'val' not found .*10k \(found: \['test'\]"):
        build_dataset("bdd100k", tmp_path, "val")
    with pytest.raises(DatasetError, match=r"split 'test' has no labels: missing .*masks.test"):
        build_dataset("bdd100k", tmp_path, "test")


def test_coco_bad_json(tmp_path):
    make_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{broken")
    with pytest.raises(DatasetError, match=r"instances_val2017.json is not valid JSON"):
        build_dataset("coco", tmp_path, "val2017")


def test_unknown_dataset():
    with pytest.raises(DatasetError, match=r"unknown dataset 'kitti'"):
        build_dataset("kitti", "/tmp", "val")


def test_errors_are_value_errors():
    assert issubclass(DatasetError, ValueError)
