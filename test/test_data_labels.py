"""Label spaces agree with the official Cityscapes table and map every source consistently."""

from __future__ import annotations

import numpy as np
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
