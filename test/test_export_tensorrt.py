"""TensorRT engine cache (pure parts, no TensorRT needed) and, where a GPU and tensorrt exist,
an FP16 engine built, cached and run against ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from export_helpers import tiny_export
from vltseg_core.export import tensorrt as trt_export
from vltseg_core.files import atomic_write, default_file_mode
from vltseg_core.export.metadata import ModelMetadata, default_class_names, default_palette

BASE = dict(
    onnx_sha256="ab" * 32,
    trt_version="10.13.0.35",
    gpu_name="NVIDIA H100 80GB HBM3 sm_90 132SM",
    precision="fp16",
    shapes={"images": ((1, 3, 512, 1024),) * 3},
)
CHANGES = dict(
    onnx_sha256="cd" * 32,
    trt_version="10.14.1.48",
    gpu_name="NVIDIA L4 sm_89 58SM",
    precision="fp32",
    shapes={"images": ((1, 3, 512, 1024), (1, 3, 512, 1024), (4, 3, 512, 1024))},
)


def test_cache_key_is_deterministic() -> None:
    assert trt_export.engine_cache_key(**BASE) == trt_export.engine_cache_key(**dict(BASE))


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_cache_key_changes_with_every_input(field: str) -> None:
    changed = dict(BASE, **{field: CHANGES[field]})
    assert trt_export.engine_cache_key(**changed) != trt_export.engine_cache_key(**BASE)


def test_engine_lives_next_to_the_onnx(tmp_path: Path) -> None:
    key = trt_export.engine_cache_key(**BASE)
    path = trt_export.engine_path(tmp_path / "model.onnx", "fp16", key)
    assert path.parent == tmp_path and path.name == f"model.fp16.{key[:16]}.engine"


def test_sha256_of_file_tracks_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.onnx"
    a.write_bytes(b"graph")
    first = trt_export.sha256_file(a)
    a.write_bytes(b"graph2")
    assert trt_export.sha256_file(a) != first


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.engine"
    target.write_bytes(b"old")
    atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"new" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["x.engine"]
    assert target.stat().st_mode & 0o777 == default_file_mode()


def test_profile_shapes_follow_the_graph_batch() -> None:
    meta = ModelMetadata(preset="p", num_classes=2, class_names=default_class_names(2),
                         class_colors=default_palette(2), pixel_mean=(0, 0, 0),
                         pixel_std=(1, 1, 1), input_size=(64, 96), batch=2)
    assert trt_export.input_shapes(meta)["images"] == ((2, 3, 64, 96),) * 3
    lo, opt, hi = trt_export.input_shapes(replace(meta, batch=None), max_batch=8)["images"]
    assert lo[0] == opt[0] == 1 and hi == (8, 3, 64, 96)


_REASON = trt_export.tensorrt_unavailable_reason()


@pytest.mark.gpu
@pytest.mark.skipif(_REASON is not None, reason=f"TensorRT test needs tensorrt and a GPU: {_REASON}")
def test_fp16_engine_builds_caches_and_matches_onnxruntime(tmp_path: Path) -> None:
    from vltseg_core.export.onnx import read_metadata

    onnx_path = tmp_path / "seg.onnx"
    onnx_path.write_bytes(tiny_export("vltseg_tiny_m2f", "portable").read_bytes())
    meta = read_metadata(onnx_path)
    runner, engine = trt_export.load_or_build(onnx_path, meta)  # parity vs ORT checked inside
    assert engine.exists() and engine.parent == tmp_path
    assert engine.with_name(engine.name + ".json").exists()
    stamp = engine.stat().st_mtime_ns
    _, again = trt_export.load_or_build(onnx_path, meta)
    assert again == engine and engine.stat().st_mtime_ns == stamp  # cache hit, no rebuild
    engine.write_bytes(b"engine for another GPU")  # does not deserialise -> rebuilt, not fatal
    _, rebuilt = trt_export.load_or_build(onnx_path, meta)
    assert rebuilt == engine and engine.stat().st_size > 1000
