"""Predictor: backends agree on the same images; outputs at input resolution; clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from export_helpers import NUM_CLASSES, tiny_checkpoint, tiny_dynamic_export, tiny_export
from vltseg_core.export.tensorrt import tensorrt_unavailable_reason
from vltseg_core.runtime import ModelFileError, Prediction, Predictor

SIZES = [(128, 256), (300, 400), (97, 333)]


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for h, w in SIZES:  # smooth blobs + noise, like the export parity images
        coarse = rng.integers(0, 255, (max(2, h // 24), max(2, w // 24), 3)).astype(np.float32)
        up = np.kron(coarse, np.ones((24, 24, 1)))[:h, :w]
        out.append(np.clip(up + rng.normal(0, 8, up.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def seg_predictors() -> tuple[Predictor, Predictor]:
    torch_p = Predictor(tiny_checkpoint("vltseg_tiny_m2f"), backend="torch")
    ort_p = Predictor(tiny_export("vltseg_tiny_m2f"), backend="onnxruntime")
    return torch_p, ort_p


def test_torch_and_onnxruntime_agree(seg_predictors: tuple[Predictor, Predictor]) -> None:
    torch_p, ort_p = seg_predictors
    images = _images()
    for a, b, image in zip(torch_p(images), ort_p(images), images):
        assert a.mask.shape == image.shape[:2] and a.mask.dtype == np.uint8
        assert a.confidence.shape == image.shape[:2] and a.confidence.dtype == np.float32
        assert (a.mask == b.mask).mean() >= 0.999
        assert np.abs(a.confidence - b.confidence).max() <= 1e-3
        assert a.mask.max() < NUM_CLASSES


def test_single_image_bgr_and_list_calls_match(seg_predictors: tuple[Predictor, Predictor]) -> None:
    _, ort_p = seg_predictors
    images = _images(1)
    single = ort_p(images[1])
    assert isinstance(single, Prediction)
    assert np.array_equal(single.mask, ort_p(images)[1].mask)
    bgr = ort_p(np.ascontiguousarray(images[1][..., ::-1]), bgr=True)
    assert np.array_equal(bgr.mask, single.mask)


def test_metadata_reaches_the_predictor(seg_predictors: tuple[Predictor, Predictor]) -> None:
    torch_p, ort_p = seg_predictors
    for p in (torch_p, ort_p):
        assert p.metadata.class_names[0] == "thing0" and p.metadata.input_size == (128, 256)


@pytest.mark.parametrize("preset, tasks", [("vltseg_tiny_m2f", ("seg",)), ("vltseg_tiny_det", ("det",)),
                                           ("vltseg_tiny_joint", ("seg", "det"))])
def test_checkpoint_metadata_names_the_models_tasks(preset: str, tasks: tuple[str, ...]) -> None:
    """A .pt served by the torch backend says which heads it has (consumers such as the ROS node
    publish boxes only for models whose metadata has "det")."""
    assert Predictor(tiny_checkpoint(preset), backend="torch").metadata.tasks == tasks


@pytest.mark.slow
def test_joint_backends_agree_on_detections() -> None:
    torch_p = Predictor(tiny_checkpoint("vltseg_tiny_joint"), backend="torch")
    ort_p = Predictor(tiny_export("vltseg_tiny_joint"))  # backend from the suffix
    assert torch_p.metadata.tasks == ort_p.metadata.tasks == ("seg", "det")
    for a, b in zip(torch_p(_images(2)), ort_p(_images(2))):
        assert (a.mask == b.mask).mean() >= 0.999
        n = len(b.scores)  # the graph keeps the best 20 (export max_detections); torch 100
        assert 0 < n <= 20 and len(a.scores) >= n
        assert np.allclose(a.scores[:n], b.scores, atol=1e-3)
        assert np.allclose(a.boxes[:n], b.boxes, atol=0.5)
        assert np.array_equal(a.labels[:n], b.labels)
        assert b.boxes.dtype == np.float32 and b.labels.dtype == np.int64


def test_predictor_batches_cameras_through_one_dynamic_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default export has a dynamic batch: three images of different sizes go through the
    graph in one call of batch 3 (no padding copies), with eager torch's results, and the
    same results as one image at a time through the same file."""
    ort_p = Predictor(tiny_dynamic_export("vltseg_tiny_joint"))
    assert ort_p.backend.fixed_batch is None
    calls: list[tuple[int, ...]] = []
    run = ort_p.backend.run
    monkeypatch.setattr(ort_p.backend, "run", lambda x: calls.append(x.shape) or run(x))
    images = _images(3)
    batched = ort_p(images)
    assert calls == [(3, 3, 128, 256)]
    torch_p = Predictor(tiny_checkpoint("vltseg_tiny_joint"), backend="torch")
    for a, b, image in zip(torch_p(images), batched, images):
        single = ort_p(image)
        assert np.array_equal(single.mask, b.mask) and np.array_equal(single.labels, b.labels)
        assert np.allclose(single.boxes, b.boxes, atol=1e-3)
        assert (a.mask == b.mask).mean() >= 0.999
        n = len(b.scores)  # the graph keeps the best 20 (export max_detections); torch 100
        assert 0 < n <= 20 and np.allclose(a.scores[:n], b.scores, atol=1e-3)
        assert np.allclose(a.boxes[:n], b.boxes, atol=0.5) and np.array_equal(a.labels[:n], b.labels)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        Predictor(tmp_path / "absent.onnx")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_onnx_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.onnx"
    if damage == "garbage":
        bad.write_bytes(b"\x00not an onnx model" * 100)
    else:
        data = tiny_export("vltseg_tiny_m2f").read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError) as err:
        Predictor(bad, backend="onnxruntime")
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_onnx_without_vltseg_metadata_is_rejected(tmp_path: Path) -> None:
    proto = onnx.load(str(tiny_export("vltseg_tiny_m2f")))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    with pytest.raises(ModelFileError, match="not a vltseg export"):
        Predictor(plain)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    shutil.copy(tiny_checkpoint("vltseg_tiny_m2f"), bad)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a loadable vltseg checkpoint"):
        Predictor(bad, backend="torch")


def test_unknown_suffix_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        Predictor(path)


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is available here")
def test_tensorrt_backend_says_why_it_cannot_run() -> None:
    with pytest.raises(RuntimeError, match="tensorrt is not installed|no CUDA device"):
        Predictor(tiny_export("vltseg_tiny_m2f", "portable"), backend="tensorrt", device="cuda:0")


def test_tensorrt_refuses_an_onnxruntime_export() -> None:
    """Checked before TensorRT is needed: the fused-attention graph would not parse there."""
    with pytest.raises(ValueError, match="exported for ONNX Runtime.*--target portable"):
        Predictor(tiny_export("vltseg_tiny_m2f"), backend="tensorrt", device="cuda:0")
