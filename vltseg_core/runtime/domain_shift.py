"""Domain-shift monitor: the paper's problem (a model trained on one domain meeting fog, night,
rain, snow) seen at run time through the model's own outputs.

Per frame three figures are taken: the mean of the confidence map, the fraction of pixels
below `low_threshold`, and the predicted class mix (fraction of pixels per class). A
`ShiftBand` holds what these look like on source-domain images (calibrated on validation
images and stored in the exported model's metadata); `ShiftMonitor` keeps running means over
the last frames of a camera and reports when they leave the band and when they return.

Why the class mix: a model can be confidently wrong. The demo model's mean confidence at night
equals its clear-weather value (0.73) while its mIoU falls from 21 to 8; what moves is the mix
of classes it predicts (Jensen-Shannon divergence from the source mix 0.041 at night, against
at most 0.023 for single clear images). NumPy and OpenCV, no ROS: the ROS node and bag
evaluation share it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

METADATA_KEY = "domain_shift"  # key in ModelMetadata.extra (JSON of a ShiftBand)
_EPS = 1e-6


@dataclass(frozen=True)
class ShiftBand:
    """Source-domain range of the running figures: mean confidence >= min_confidence,
    low-confidence fraction <= max_low_fraction, divergence of the class mix from `class_mix`
    <= max_class_divergence (empty class_mix: not checked). `images`: calibration size."""

    min_confidence: float
    max_low_fraction: float
    low_threshold: float = 0.5
    class_mix: tuple[float, ...] = ()
    max_class_divergence: float = 1.0
    images: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShiftBand:
        values = json.loads(text)
        values["class_mix"] = tuple(values.get("class_mix", ()))
        return cls(**values)


@dataclass(frozen=True)
class ShiftState:
    """What the monitor says after a frame; `shifted` is None until the window has frames;
    `reasons` names the figures outside the band."""

    mean_confidence: float
    low_fraction: float
    class_divergence: float
    frames: int
    shifted: bool | None
    reasons: tuple[str, ...] = field(default=())

    def describe(self, band: ShiftBand | None) -> str:
        figures = (f"mean confidence {self.mean_confidence:.3f}, low-confidence pixels "
                   f"{self.low_fraction:.1%}, class-mix divergence {self.class_divergence:.3f}")
        if band is None:
            return f"{figures} (no calibrated band)"
        verdict = {None: "warming up", True: "OUTSIDE the source-domain band", False: "in band"}[self.shifted]
        limits = (f"band: confidence >= {band.min_confidence:.3f}, low <= {band.max_low_fraction:.1%}, "
                  f"divergence <= {band.max_class_divergence:.3f}")
        why = f" ({', '.join(self.reasons)})" if self.reasons else ""
        return f"{verdict}{why}: {figures} over {self.frames} frames; {limits}"


def class_mix(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of pixels per class id (ids >= num_classes, e.g. 255 = ignore, left out).

    OpenCV's histogram: 5x faster than np.bincount at 2048x1024 and it releases the GIL (the
    ROS node runs this per frame beside its receiving thread); float32 counts are exact up to
    2^24 pixels per class."""
    mask = np.ascontiguousarray(mask, np.uint8)
    if mask.size == 0:
        return np.zeros(num_classes)
    plane = mask.reshape(mask.shape[0], -1) if mask.ndim > 1 else mask[None]
    counts = cv2.calcHist([plane], [0], None, [256], [0, 256]).ravel()[:num_classes].astype(np.float64)
    return counts / max(1.0, counts.sum())


def divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats, 0..ln 2) between two class mixes."""
    p, q = np.asarray(p, np.float64) + _EPS, np.asarray(q, np.float64) + _EPS
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


def frame_figures(confidence: np.ndarray, low_threshold: float) -> tuple[float, float]:
    """(mean confidence, fraction of pixels below low_threshold) of one HxW confidence map."""
    conf = np.ascontiguousarray(confidence, np.float32)
    if conf.size == 0:
        return float("nan"), float("nan")
    return mean_confidence(conf), np.count_nonzero(conf < low_threshold) / conf.size


def mean_confidence(confidence: np.ndarray) -> float:
    """Mean of a confidence map (OpenCV's float64 sum for 2-D maps: it releases the GIL)."""
    conf = np.ascontiguousarray(confidence, np.float32)
    if conf.ndim == 2 and conf.size:
        return float(cv2.mean(conf)[0])
    return float(conf.mean(dtype=np.float64)) if conf.size else float("nan")


def calibrate(
    predictions: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int,
    low_threshold: float = 0.5, quantile: float = 0.05,
) -> ShiftBand:
    """A band from source-domain (confidence, mask) pairs: the `quantile` of per-image mean
    confidence, the 1 - `quantile` of per-image low fractions and of per-image class-mix
    divergences from the mean mix. A running mean over several in-domain frames varies less
    than single images, so it stays inside; a domain that moves most frames drags it out."""
    figures, mixes = [], []
    for confidence, mask in predictions:
        figures.append(frame_figures(confidence, low_threshold))
        mixes.append(class_mix(mask, num_classes))
    if not figures:
        raise ValueError("calibration needs at least one image")
    figs, mean_mix = np.array(figures, np.float64), np.mean(mixes, axis=0)
    divergences = [divergence(m, mean_mix) for m in mixes]
    return ShiftBand(
        min_confidence=round(float(np.quantile(figs[:, 0], quantile)), 4),
        max_low_fraction=round(float(np.quantile(figs[:, 1], 1 - quantile)), 4),
        low_threshold=low_threshold,
        class_mix=tuple(round(float(v), 5) for v in mean_mix),
        max_class_divergence=round(float(np.quantile(divergences, 1 - quantile)), 5),
        images=len(figures),
    )


class ShiftMonitor:
    """Running means over the last `window` frames compared with a band.

    `min_frames` frames are needed before a verdict, so one odd first frame does not warn."""

    def __init__(self, band: ShiftBand | None, window: int = 30, min_frames: int = 5,
                 low_threshold: float | None = None, num_classes: int | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.band = band
        self.low_threshold = low_threshold if low_threshold is not None else (band.low_threshold if band else 0.5)
        self.num_classes = num_classes or (len(band.class_mix) if band and band.class_mix else 256)
        self.min_frames = max(1, min(min_frames, window))
        self._figures: deque[tuple[float, float]] = deque(maxlen=window)
        self._mixes: deque[np.ndarray] = deque(maxlen=window)
        self.state = ShiftState(0.0, 0.0, 0.0, 0, None)

    def update(self, confidence: np.ndarray, mask: np.ndarray) -> ShiftState:
        self._figures.append(frame_figures(confidence, self.low_threshold))
        self._mixes.append(class_mix(mask, self.num_classes))
        mean_conf, low = (float(v) for v in np.mean(self._figures, axis=0))
        band = self.band
        div = divergence(np.mean(self._mixes, axis=0), band.class_mix) if band and band.class_mix else 0.0
        shifted, reasons = None, ()
        if band is not None and len(self._figures) >= self.min_frames:
            reasons = tuple(name for name, out in (
                ("low confidence", mean_conf < band.min_confidence),
                ("many low-confidence pixels", low > band.max_low_fraction),
                ("unusual class mix", bool(band.class_mix) and div > band.max_class_divergence),
            ) if out)
            shifted = bool(reasons)
        self.state = ShiftState(mean_conf, low, div, len(self._figures), shifted, reasons)
        return self.state

    @property
    def frame_confidence(self) -> float:
        """The mean confidence of the latest frame (the running means are in :attr:`state`)."""
        return self._figures[-1][0] if self._figures else float("nan")

    def reset(self) -> None:
        self._figures.clear()
        self._mixes.clear()
        self.state = ShiftState(0.0, 0.0, 0.0, 0, None)


def band_from_metadata(extra: dict[str, str]) -> ShiftBand | None:
    """The band an export stored in its metadata, or None."""
    text = extra.get(METADATA_KEY)
    return ShiftBand.from_json(text) if text else None
