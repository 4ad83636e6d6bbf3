"""Label spaces: the 19 Cityscapes train classes and the maps from every source dataset into them.

Everything Cityscapes-specific is derived from ``cityscapesscripts.helpers.labels`` (the
official table) instead of being retyped, so train ids, colours and the thing/stuff split can
never drift from what the benchmark evaluates. The table is loaded lazily: importing this
module costs nothing and works without the optional ``data`` extra until a table is used.

All look-up tables (LUTs) are ``uint8[256]`` with ``255`` = ignore; :func:`apply_lut` clips
larger raw values (16-bit SYNTHIA labels) onto the last entry, which is always ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19


@dataclass(frozen=True)
class ClassInfo:
    """One Cityscapes train class: contiguous train id, official label id, name, RGB colour."""

    train_id: int
    label_id: int
    name: str
    color: tuple[int, int, int]
    is_thing: bool


def _cs_table() -> list[Any]:
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "cityscapesscripts provides the Cityscapes label table; install the 'data' extra "
            "(pip install 'vltseg[data]')"
        ) from exc
    return list(labels)


@lru_cache(maxsize=1)
def cityscapes_classes() -> tuple[ClassInfo, ...]:
    """The 19 evaluated classes ordered by train id (0 = road ... 18 = bicycle)."""
    rows = [lb for lb in _cs_table() if 0 <= lb.trainId < IGNORE_INDEX and not lb.ignoreInEval]
    rows.sort(key=lambda lb: lb.trainId)
    out = tuple(
        ClassInfo(lb.trainId, lb.id, lb.name, tuple(lb.color), bool(lb.hasInstances))
        for lb in rows
    )
    assert [c.train_id for c in out] == list(range(NUM_CLASSES)), "unexpected Cityscapes table"
    return out


def class_names() -> tuple[str, ...]:
    return tuple(c.name for c in cityscapes_classes())


def palette() -> np.ndarray:
    """``uint8[256, 3]`` RGB colours indexed by train id; ignore (255) is black."""
    pal = np.zeros((256, 3), np.uint8)
    for c in cityscapes_classes():
        pal[c.train_id] = c.color
    return pal


def thing_train_ids() -> tuple[int, ...]:
    """Train ids of the 8 instance classes: person, rider, car, truck, bus, train, motorcycle,
    bicycle (``hasInstances`` and evaluated in the official table)."""
    return tuple(c.train_id for c in cityscapes_classes() if c.is_thing)


def name_to_train_id() -> dict[str, int]:
    return {c.name: c.train_id for c in cityscapes_classes()}


@lru_cache(maxsize=1)
def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for lb in _cs_table():
        if 0 <= lb.id < 256 and 0 <= lb.trainId < IGNORE_INDEX:
            lut[lb.id] = lb.trainId
    return lut


def cityscapes_lut() -> np.ndarray:
    """Label id -> train id (``uint8[256]``). GTA5 labels use the same ids, so GTA5 uses it too."""
    return _cityscapes_lut().copy()


@lru_cache(maxsize=1)
def _train_to_label() -> np.ndarray:
    inv = np.zeros(256, np.uint8)  # 255 (ignore) -> 0 'unlabeled', as official submissions do
    for c in cityscapes_classes():
        inv[c.train_id] = c.label_id
    return inv


def train_to_label_lut() -> np.ndarray:
    """Train id -> official label id, for writing predictions in the benchmark's id space."""
    return _train_to_label().copy()


def apply_lut(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map raw ids through ``lut``; values beyond the table land on its last entry (ignore)."""
    if label.dtype != np.uint8:
        label = np.minimum(label, len(lut) - 1)
    return lut[label]


# --- SYNTHIA-RAND-CITYSCAPES -------------------------------------------------------------
# Class ids from the dataset's README (GT/LABELS: 16-bit PNG, class id in the first = R
# channel, instance id in the second). Names are matched to Cityscapes names below.
SYNTHIA_NAMES: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence",
    6: "vegetation", 7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian",
    11: "bicycle", 12: "motorcycle", 13: "parking-slot", 14: "road-work",
    15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus",
    20: "train", 21: "wall", 22: "lanemarking",
}
_SYNTHIA_RENAME = {"pedestrian": "person"}
# SYNTHIA annotates 16 of the 19 classes (terrain, truck, train have no pixels); DG papers
# report mIoU over these 16 (and 13 without wall, fence, pole).
SYNTHIA_16 = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
              "traffic sign", "vegetation", "sky", "person", "rider", "car", "bus",
              "motorcycle", "bicycle")


def synthia_lut() -> np.ndarray:
    """SYNTHIA class id -> train id, matched by class name.

    Terrain/truck/train are mapped too (as DAFormer's converter does) because they are the
    same concepts; they carry no pixels, so evaluate over :func:`synthia_eval_train_ids`.
    Parking-slot, road-work and lane-marking stay ignored (DAFormer/HRDA protocol).
    """
    n2t = name_to_train_id()
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for sid, name in SYNTHIA_NAMES.items():
        cs_name = _SYNTHIA_RENAME.get(name, name)
        if cs_name in n2t:
            lut[sid] = n2t[cs_name]
    return lut


def synthia_eval_train_ids() -> tuple[int, ...]:
    n2t = name_to_train_id()
    return tuple(sorted(n2t[n] for n in SYNTHIA_16))


def train_id_lut() -> np.ndarray:
    """Identity on the 19 train ids, ignore for anything else (guards against stray values)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[:NUM_CLASSES] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut


def bdd100k_lut() -> np.ndarray:
    """BDD100K sem_seg masks already hold Cityscapes train ids (255 = unknown)."""
    return train_id_lut()


# --- Mapillary Vistas v1.2 ---------------------------------------------------------------
# The 66 labels of config_v1.2.json in index order (the value stored in v1.2/labels/*.png).
VISTAS_V12_NAMES: tuple[str, ...] = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb",
    "construction--barrier--fence", "construction--barrier--guard-rail",
    "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain",
    "construction--flat--curb-cut", "construction--flat--parking",
    "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane",
    "construction--flat--sidewalk", "construction--structure--bridge",
    "construction--structure--building", "construction--structure--tunnel", "human--person",
    "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand",
    "nature--sky", "nature--snow", "nature--terrain", "nature--vegetation", "nature--water",
    "object--banner", "object--bench", "object--bike-rack", "object--billboard",
    "object--catch-basin", "object--cctv-camera", "object--fire-hydrant",
    "object--junction-box", "object--mailbox", "object--manhole", "object--phone-booth",
    "object--pothole", "object--street-light", "object--support--pole",
    "object--support--traffic-sign-frame", "object--support--utility-pole",
    "object--traffic-light", "object--traffic-sign--back", "object--traffic-sign--front",
    "object--trash-can", "object--vehicle--bicycle", "object--vehicle--boat",
    "object--vehicle--bus", "object--vehicle--car", "object--vehicle--caravan",
    "object--vehicle--motorcycle", "object--vehicle--on-rails",
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
    "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle", "void--unlabeled",
)

# Vistas -> Cityscapes as the DG benchmarks score it: the converter the VLTSeg reproduction
# and Rein use (HRDA's tools/convert_datasets/mapillary.py, also in
# github.com/VLTSeg/VLTSeg tools/dataset_converters/mapillary.py), by v1.2 index: 25 labels
# map, manhole counts as road, and everything else is ignored, including bike and service
# lanes, plain and zebra crosswalks, curb cuts, pedestrian areas, sand and sign frames.
VISTAS_TO_CITYSCAPES: dict[str, str] = {
    "construction--flat--road": "road",
    "marking--general": "road",
    "object--manhole": "road",
    "construction--barrier--curb": "sidewalk",
    "construction--flat--sidewalk": "sidewalk",
    "construction--structure--building": "building",
    "construction--barrier--wall": "wall",
    "construction--barrier--fence": "fence",
    "object--support--pole": "pole",
    "object--support--utility-pole": "pole",
    "object--traffic-light": "traffic light",
    "object--traffic-sign--front": "traffic sign",
    "nature--vegetation": "vegetation",
    "nature--terrain": "terrain",
    "nature--sky": "sky",
    "human--person": "person",
    "human--rider--bicyclist": "rider",
    "human--rider--motorcyclist": "rider",
    "human--rider--other-rider": "rider",
    "object--vehicle--car": "car",
    "object--vehicle--truck": "truck",
    "object--vehicle--bus": "bus",
    "object--vehicle--on-rails": "train",
    "object--vehicle--motorcycle": "motorcycle",
    "object--vehicle--bicycle": "bicycle",
}


def vistas_names_from_config(config: Path) -> tuple[str, ...]:
    """Label names in index order from a Vistas ``config_v1.2.json`` (``labels[i]['name']``)."""
    with open(config, encoding="utf-8") as f:
        return tuple(str(lb["name"]) for lb in json.load(f)["labels"])


def mapillary_lut(names: tuple[str, ...] = VISTAS_V12_NAMES) -> np.ndarray:
    """Vistas label index -> train id, built by name so a shipped config can override the order."""
    unknown = set(VISTAS_TO_CITYSCAPES) - set(names)
    if unknown:
        raise ValueError(f"Vistas label list lacks {sorted(unknown)}; is it a v1.2 config?")
    n2t = name_to_train_id()
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for idx, name in enumerate(names):
        if name in VISTAS_TO_CITYSCAPES:
            lut[idx] = n2t[VISTAS_TO_CITYSCAPES[name]]
    return lut
