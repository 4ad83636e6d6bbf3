"""Label spaces agree with the official Cityscapes table and map every source consistently."""

from __future__ import annotations

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels

from vltseg_core.data import labels as L


def test_nineteen_classes_and_things():
    names = L.class_names()
    assert len(names) == 19 and names[0] == "road" and names[-1] == "bicycle"
    things = {names[t] for t in L.thing_train_ids()}
    assert things == {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    assert tuple(L.palette()[13]) == (0, 0, 142) and tuple(L.palette()[255]) == (0, 0, 0)


def test_cityscapes_lut_matches_official_table():
    lut = L.cityscapes_lut()
    for lb in cs_labels:
        if lb.id < 0:
            continue
        expected = lb.trainId if 0 <= lb.trainId < 255 and not lb.ignoreInEval else 255
        assert lut[lb.id] == expected, lb.name
    inv = L.train_to_label_lut()
    assert (lut[inv[:19]] == np.arange(19)).all()


def test_apply_lut_clips_large_values():
    raw = np.array([[7, 300], [65535, 26]], np.uint16)
    assert L.apply_lut(raw, L.cityscapes_lut()).tolist() == [[0, 255], [255, 13]]


def test_synthia_shared_classes():
    lut = L.synthia_lut()
    assert len(L.synthia_eval_train_ids()) == 16
    assert lut[10] == 11 and lut[3] == 0 and lut[21] == 3  # pedestrian, road, wall
    assert lut[0] == lut[13] == lut[14] == lut[22] == 255  # void, parking, road-work, lanes
    assert set(L.synthia_eval_train_ids()) <= set(lut[lut != 255].tolist())


def test_vistas_mapping_reaches_every_class():
    lut = L.mapillary_lut()
    assert len(L.VISTAS_V12_NAMES) == 66 and len(set(L.VISTAS_V12_NAMES)) == 66
    assert set(lut[:66].tolist()) - {255} == set(range(19))
    assert (lut[:66] != 255).sum() == len(L.VISTAS_TO_CITYSCAPES)


# The reference table by Vistas v1.2 index (HRDA's Mapillary converter, as shipped in
# github.com/VLTSeg/VLTSeg tools/dataset_converters/mapillary.py and used by Rein).
REFERENCE_VISTAS_TO_TRAIN_ID = {
    13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7, 30: 8,
    29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17,
    52: 18,
}


@pytest.mark.parametrize("index", range(66))
def test_vistas_mapping_equals_the_reference_entry_by_entry(index):
    expected = REFERENCE_VISTAS_TO_TRAIN_ID.get(index, 255)
    assert L.mapillary_lut()[index] == expected, L.VISTAS_V12_NAMES[index]


def test_vistas_mapping_follows_a_config_order_by_name():
    names = tuple(reversed(L.VISTAS_V12_NAMES))
    lut = L.mapillary_lut(names)
    for index, train_id in REFERENCE_VISTAS_TO_TRAIN_ID.items():
        assert lut[65 - index] == train_id
    assert (lut[:66] != 255).sum() == len(REFERENCE_VISTAS_TO_TRAIN_ID)
