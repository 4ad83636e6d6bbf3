"""Domain-shift band and monitor (vltseg_core.runtime.domain_shift) and calibration stored in
exports (vltseg_core.export.calibrate)."""

from __future__ import annotations

import numpy as np
import pytest

from vltseg_core.runtime.domain_shift import (
    ShiftBand,
    ShiftMonitor,
    band_from_metadata,
    calibrate,
    class_mix,
    divergence,
    frame_figures,
)

K = 5


def _prediction(rng: np.random.Generator, conf: float, mix: list[float]) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.clip(rng.normal(conf, 0.1, (32, 48)), 0, 1).astype(np.float32)
    mask = rng.choice(K, size=(32, 48), p=mix).astype(np.uint8)
    return confidence, mask


SOURCE_MIX = [0.4, 0.3, 0.2, 0.05, 0.05]


def _band(rng: np.random.Generator) -> ShiftBand:
    return calibrate([_prediction(rng, 0.8, SOURCE_MIX) for _ in range(40)], K)


def test_class_mix_and_divergence() -> None:
    mask = np.array([[0, 0, 1, 255]], np.uint8)
    np.testing.assert_allclose(class_mix(mask, 3), [2 / 3, 1 / 3, 0])
    assert divergence([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0, abs=1e-9)
    assert divergence([1, 0], [0, 1]) == pytest.approx(np.log(2), rel=1e-3)


@pytest.mark.parametrize("shape", [(7,), (1024, 2048), (3, 5, 2)])
def test_class_mix_and_figures_match_plain_numpy(shape: tuple[int, ...]) -> None:
    """The OpenCV histogram and counting give NumPy's figures (camera size and odd shapes)."""
    rng = np.random.default_rng(len(shape))
    mask = rng.integers(0, 256, shape).astype(np.uint8)
    counts = np.bincount(mask.ravel(), minlength=256)[:19]
    np.testing.assert_allclose(class_mix(mask, 19), counts / counts.sum(), rtol=1e-12)
    conf = rng.random(shape, dtype=np.float32)
    mean, low = frame_figures(conf, 0.3)
    assert mean == pytest.approx(float(conf.mean()), rel=1e-6)
    assert low == pytest.approx(float((conf < 0.3).mean()), rel=1e-12)


def test_source_stays_in_band_and_each_shift_is_named() -> None:
    rng = np.random.default_rng(0)
    band = _band(rng)
    assert band.images == 40 and len(band.class_mix) == K
    cases = {
        "source": (0.8, SOURCE_MIX, ()),
        "dark": (0.55, SOURCE_MIX, ("low confidence", "many low-confidence pixels")),
        "confidently wrong": (0.8, [0.05, 0.05, 0.1, 0.4, 0.4], ("unusual class mix",)),
    }
    for name, (conf, mix, reasons) in cases.items():
        monitor = ShiftMonitor(band, window=10)
        states = [monitor.update(*_prediction(rng, conf, mix)) for _ in range(20)]
        assert states[0].shifted is None  # warming up
        assert states[-1].shifted is bool(reasons), (name, states[-1].describe(band))
        assert states[-1].reasons == reasons, name


def test_monitor_clears_when_the_domain_returns() -> None:
    rng = np.random.default_rng(1)
    band = _band(rng)
    monitor = ShiftMonitor(band, window=5)
    assert np.isnan(monitor.frame_confidence)
    for i, conf in enumerate([0.8] * 5 + [0.5] * 5):
        confidence, mask = _prediction(rng, conf, SOURCE_MIX)
        state = monitor.update(confidence, mask)
        # the latest frame's own mean (what diagnostics report), not the window's running mean
        assert monitor.frame_confidence == pytest.approx(float(confidence.mean()), abs=1e-5)
        if i == 5:
            assert monitor.frame_confidence < state.mean_confidence - 0.2
    assert state.shifted
    for _ in range(5):
        state = monitor.update(*_prediction(rng, 0.8, SOURCE_MIX))
    assert state.shifted is False


def test_band_round_trips_through_metadata_json() -> None:
    band = _band(np.random.default_rng(2))
    assert band_from_metadata({"domain_shift": band.to_json()}) == band
    assert band_from_metadata({}) is None


def _image_folder(folder, count: int = 6):
    import cv2

    from vltseg_core.data.synth_domains import apply_domain
    from vltseg_core.data.synth_objects import render_scene

    folder.mkdir(parents=True)
    for i in range(count):
        scene = render_scene(np.random.default_rng([i]), 256, 128)
        image = apply_domain(scene, "clear", np.random.default_rng([i, 1]))
        cv2.imwrite(str(folder / f"{i}.png"), image[..., ::-1])
    return folder


def test_calibrate_command_stores_the_band_in_the_export(tmp_path) -> None:
    """`vltseg calibrate` writes the band into the ONNX metadata that Predictor reads back;
    the engine sidecar path gets it too; a missing folder is a one-line error."""
    import shutil

    from export_helpers import tiny_export
    from train_helpers import vltseg
    from vltseg_core.export.calibrate import store_band
    from vltseg_core.export.metadata import ModelMetadata
    from vltseg_core.runtime.predictor import Predictor

    model = tmp_path / "model.onnx"
    shutil.copy(tiny_export("vltseg_tiny_m2f"), model)
    images = _image_folder(tmp_path / "val")
    run = vltseg("calibrate", str(model), str(images))
    assert "domain-shift band from 6 images" in run.stdout
    band = band_from_metadata(Predictor(model).metadata.extra)
    assert band is not None and band.images == 6 and len(band.class_mix) == 7
    assert 0.0 <= band.min_confidence <= 1.0 and 0.0 <= band.max_low_fraction <= 1.0

    engine = tmp_path / "model.fp16.abc.engine"
    engine.write_bytes(b"engine")
    (tmp_path / "model.fp16.abc.engine.json").write_text(Predictor(model).metadata.to_json())
    store_band(engine, band)
    sidecar = ModelMetadata.from_json((tmp_path / "model.fp16.abc.engine.json").read_text())
    assert band_from_metadata(sidecar.extra) == band

    bad = vltseg("calibrate", str(model), str(tmp_path / "missing"), check=False)
    assert bad.returncode == 2 and "calibration folder not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
