"""TensorRT engines: the cache key and profile rules; every build / load / run decision against a
fake of the TensorRT 10.3 (JetPack 6), 10.13 and 11.4 Python API (test/fake_tensorrt.py: only
names those versions have, a CPU stand-in for the CUDA device/stream calls); and, where a GPU
and tensorrt exist, a real fp16 engine built, cached and run against ONNX Runtime."""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from export_helpers import tiny_export
from fake_tensorrt import FakeCuda, builds, loggers, make_tensorrt, plan_of
from vltseg_core.export import tensorrt as trt_export
from vltseg_core.export import tensorrt_runner as rt
from vltseg_core.export.metadata import ModelMetadata, default_class_names, default_palette
from vltseg_core.files import atomic_write, default_file_mode
from vltseg_core.runtime import ModelFileError, Predictor
from vltseg_core.runtime.backends import TensorRTBackend

BASE = dict(
    onnx_sha256="ab" * 32,
    trt_version="10.13.0.35",
    gpu_name="NVIDIA H100 80GB HBM3 sm_90 132SM",
    precision="fp16",
    shapes={"images": ((1, 3, 512, 1024),) * 3},
)
CHANGES = dict(
    onnx_sha256="cd" * 32,
    trt_version="11.4.0.106",
    gpu_name="NVIDIA L4 sm_89 58SM",
    precision="fp32",
    shapes={"images": ((1, 3, 512, 1024), (4, 3, 512, 1024), (4, 3, 512, 1024))},
)
H, W = 8, 12
GPUS = ("Fake GPU A sm_90 132SM", "Fake GPU B sm_89 58SM")
Install = Callable[..., tuple[types.ModuleType, FakeCuda]]


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


def test_profile_is_the_fixed_shape_or_1_n_n_over_a_symbolic_batch() -> None:
    assert trt_export.profile_shapes((2, 3, 64, 96), 8) == ((2, 3, 64, 96),) * 3
    assert trt_export.profile_shapes((-1, 3, 64, 96), 8) == ((1, 3, 64, 96), (8, 3, 64, 96), (8, 3, 64, 96))
    with pytest.raises(ValueError, match="only the batch axis may be dynamic"):
        trt_export.profile_shapes((-1, 3, -1, 96), 8)
    meta = _metadata(batch=None)
    assert trt_export.input_shapes(meta, 3)["images"][1] == (3, 3, H, W)  # opt = N = chunk size


def test_version_rules() -> None:
    assert rt.unsupported_version_reason((10, 3)) is None and rt.unsupported_version_reason((11, 4)) is None
    for bad in ((9, 3), (12, 0)):
        assert "not supported" in (rt.unsupported_version_reason(bad) or "")
    versions = ((10, 3), (10, 11), (10, 12), (11, 0))
    assert [rt.strongly_typed(v) for v in versions] == [False, False, True, True]
    assert rt.cuda_index("cuda") == 0 and rt.cuda_index("cuda:1") == 1
    for bad in ("cpu", "cuda:x", "mps:0"):
        with pytest.raises(ValueError, match="needs a CUDA device"):
            rt.cuda_index(bad)


# ---- against the fake TensorRT ----------------------------------------------------------------


def _metadata(batch: int | None) -> ModelMetadata:
    return ModelMetadata(preset="fake", num_classes=3, class_names=default_class_names(3),
                         class_colors=default_palette(3), pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1),
                         input_size=(H, W), outputs=("class_ids", "confidence"), batch=batch,
                         confidence="softmax", target="portable")


def _tiny_onnx(path: Path, batch: int | None = None) -> ModelMetadata:
    """A 3-class segmenter in standard ONNX ops, images uint8 [B,3,H,W] -> class_ids uint8 and
    confidence float32 [B,H,W]; B symbolic unless `batch`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = batch or "batch"
    weight = numpy_helper.from_array(np.array([1.0, 0.5, 2.0], np.float32).reshape(1, 3, 1, 1) / 64, "w")
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "w"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
        helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0),
        helper.make_node("ArgMax", ["scores"], ["ids"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["ids_f"], ["class_ids"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8, [b, 3, H, W])],
        [helper.make_tensor_value_info("class_ids", TensorProto.UINT8, [b, H, W]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [b, H, W])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    meta = _metadata(batch)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))
    return meta


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """install(version, gpus) puts a fake `tensorrt` and CUDA seam in place (again to switch)."""

    def install(version: str = "11.4", gpus: tuple[str, ...] = GPUS[:1]) -> tuple[types.ModuleType, FakeCuda]:
        cuda = FakeCuda(gpus=gpus)
        trt = make_tensorrt(version, cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(rt, "cuda", cuda)
        rt.trt_logger.cache_clear()
        return trt, cuda

    yield install
    rt.trt_logger.cache_clear()


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    _tiny_onnx(path)
    return path


def _build(onnx_path: Path, **kw: object) -> tuple[rt.TensorRTRunner, Path]:
    meta = _metadata(None) if "meta" not in kw else kw.pop("meta")
    return trt_export.load_or_build(onnx_path, meta, **{"max_batch": 2, **kw})  # type: ignore[arg-type]


def _sidecar(engine: Path) -> dict[str, object]:
    props = json.loads(trt_export.sidecar_path(engine).read_text())
    return {k.removeprefix("vltseg."): json.loads(v) for k, v in props.items()}


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 3, H, W), dtype=np.uint8)


@pytest.mark.parametrize("version", ["10.13", "11.4"])
def test_fp16_is_strongly_typed_from_the_fp16_onnx(fake: Install, onnx_path: Path, version: str) -> None:
    trt, _ = fake(version)
    _, engine = _build(onnx_path)
    plan, fp16 = plan_of(engine), onnx_path.with_name("model.fp16.onnx")
    assert plan["source"] == str(fp16) and plan["strongly_typed"] and "FP16" not in plan["flags"]
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert plan["network_flags"] == (flag if version == "10.13" else 0)  # 11.x: no other mode
    assert _sidecar(engine)["precision"] == "fp16"
    from vltseg_core.export.onnx import read_metadata

    assert read_metadata(fp16).precision == "fp16"


def test_fp16_before_10_12_uses_the_builder_flag_on_the_fp32_onnx(fake: Install, onnx_path: Path) -> None:
    fake("10.3")
    _, engine = _build(onnx_path)
    plan = plan_of(engine)
    assert plan["source"] == str(onnx_path) and not plan["strongly_typed"] and plan["network_flags"] == 0
    assert "FP16" in plan["flags"] and not onnx_path.with_name("model.fp16.onnx").exists()


def test_the_11_fake_refuses_the_weak_typing_path(fake: Install) -> None:
    """The 10.x-only call fails on the 11.x fake as on TensorRT 11 (so a regression shows)."""
    trt, cuda = fake("11.4")
    config = trt.Builder(rt.trt_logger(trt)).create_builder_config()
    with pytest.raises(AttributeError, match="FP16"):
        trt_export._set_precision(trt, config, "fp16", (10, 3))
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert make_tensorrt("10.3", cuda).BuilderFlag.FP16 is not None


def test_stale_fp16_onnx_is_converted_again_and_a_fresh_one_reused(fake: Install, onnx_path: Path) -> None:
    fake("11.4")
    fp16 = onnx_path.with_name("model.fp16.onnx")
    fp16.write_bytes(b"an fp16 copy of an older export")
    os.utime(fp16, ns=(0, 0))
    _build(onnx_path, precision="fp16")
    stamp = fp16.stat().st_mtime_ns
    assert stamp > 0 and fp16.read_bytes().startswith(b"\x08")  # a protobuf again
    trt_export.build_source(onnx_path, _metadata(None), "fp16", (11, 4))
    assert fp16.stat().st_mtime_ns == stamp


def test_export_checks_tensorrt_before_exporting(fake: Install, tmp_path: Path) -> None:
    from vltseg_core.export.cli import export_checkpoint

    trt, _ = fake("11.4")
    trt.__version__ = "12.0.1"
    with pytest.raises(rt.TensorRTUnavailable, match="TensorRT 12.0 is not supported"):
        export_checkpoint(tmp_path / "missing.pt", "tensorrt")
    trt.__version__ = "11.4.0.106"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        export_checkpoint(tmp_path / "missing.pt", "tensorrt", device="cpu")
    with pytest.raises(Exception, match="missing.pt") as err:  # past the checks: the checkpoint
        export_checkpoint(tmp_path / "missing.pt", "tensorrt")
    assert not isinstance(err.value, rt.TensorRTUnavailable)


def test_build_and_run_happen_on_the_requested_device(fake: Install, onnx_path: Path) -> None:
    _, cuda = fake("11.4", GPUS)
    runner, engine = _build(onnx_path, device=1)
    plan = plan_of(engine)
    assert plan["device"] == 1 and plan["gpu"] == GPUS[1]
    runner.run({"images": _images(2)})
    assert [e[1] for e in cuda.events if e[0] in ("deserialize", "execute")] == [1, 1, 1]  # +parity run
    assert cuda.current == 0  # restored
    _, engine0 = _build(onnx_path, device=0)
    assert engine0 != engine and plan_of(engine0)["device"] == 0
    backend = TensorRTBackend(engine, device="cuda:1")
    assert backend.runner.index == 1
    onnx_path.unlink()  # nothing to rebuild from
    with pytest.raises(ModelFileError, match="does not deserialise"):  # a GPU-B engine on GPU A
        TensorRTBackend(engine, device="cuda:0")


def test_each_runner_runs_on_its_own_stream(fake: Install, onnx_path: Path) -> None:
    _, cuda = fake("10.13")
    runner, engine = _build(onnx_path)
    other = rt.TensorRTRunner(engine.read_bytes(), 0)
    cuda.events.clear()
    runner.run({"images": _images(1)})
    (_, _, handle, current, _), sync = cuda.events
    assert handle == runner.stream.cuda_stream != 0 and current == handle  # copies on it too
    assert sync == ("synchronize", handle) and other.stream.cuda_stream != handle


def test_batch_outside_the_profile_names_its_bounds(fake: Install, onnx_path: Path) -> None:
    fake("11.4")
    runner, _ = _build(onnx_path, max_batch=2)
    with pytest.raises(ValueError, match=r"min \(1, 3, 8, 12\), max \(2, 3, 8, 12\) \(batch at most 2\)"):
        runner.run({"images": _images(3)})


@pytest.mark.parametrize("call", ["set_input_shape", "set_tensor_address", "execute_async_v3",
                                  "add_optimization_profile", "create_execution_context"])
def test_refusals_reported_by_return_value_raise(fake: Install, onnx_path: Path, call: str) -> None:
    _, cuda = fake("11.4")
    cuda.refuse.add(call)
    with pytest.raises(RuntimeError, match=f"TensorRT: {call}"):
        _build(onnx_path)
    assert not list(onnx_path.parent.glob("*.engine"))


def test_one_logger_for_every_builder_and_runtime(fake: Install, onnx_path: Path) -> None:
    trt, cuda = fake("10.3")
    _, engine = _build(onnx_path)
    rt.TensorRTRunner(engine.read_bytes(), 0)
    (logger,) = loggers(trt)
    assert plan_of(engine)["logger"] == id(logger)
    assert {e[2] for e in cuda.events if e[0] == "deserialize"} == {id(logger)}


@pytest.mark.parametrize("version", ["10.3", "10.13", "11.4"])
def test_fp32_engines_clear_tf32(fake: Install, onnx_path: Path, version: str) -> None:
    fake(version)
    _, fp32 = _build(onnx_path, precision="fp32")
    _, fp16 = _build(onnx_path, precision="fp16")
    assert "TF32" not in plan_of(fp32)["flags"] and "TF32" in plan_of(fp16)["flags"]
    assert plan_of(fp32)["source"] == str(onnx_path) and _sidecar(fp32)["precision"] == "fp32"


def test_sidecar_records_the_engine_not_the_onnx(fake: Install, onnx_path: Path) -> None:
    fake("11.4")
    _, engine = _build(onnx_path, max_batch=3)
    side = _sidecar(engine)
    assert side["precision"] == "fp16" and side["batch"] is None
    assert side["extra"] == {"tensorrt.onnx": "model.onnx", "tensorrt.max_batch": "3",
                             "tensorrt.checked": "1"}


def test_cached_engine_is_reused_and_a_dynamic_batch_gets_1_n_n(fake: Install, onnx_path: Path) -> None:
    trt, _ = fake("11.4")
    runner, engine = _build(onnx_path, max_batch=3)
    assert plan_of(engine)["profile"] == {"images": [[1, 3, H, W], [3, 3, H, W], [3, 3, H, W]]}
    assert (runner.max_batch, runner.fixed_batch) == (3, None)
    assert _build(onnx_path, max_batch=3)[1] == engine and len(builds(trt)) == 1
    meta = _tiny_onnx(onnx_path, batch=2)  # a fixed batch: the profile is that shape
    runner, engine = _build(onnx_path, meta=meta, max_batch=3)
    assert plan_of(engine)["profile"] == {"images": [[2, 3, H, W]] * 3}
    assert (runner.max_batch, runner.fixed_batch) == (2, 2)


def test_engine_file_is_used_as_it_is(fake: Install, onnx_path: Path) -> None:
    trt, cuda = fake("11.4")
    _, engine = _build(onnx_path, max_batch=2)
    backend = TensorRTBackend(engine)
    assert len(builds(trt)) == 1 and backend.engine_path == engine and backend.checked
    assert (backend.metadata.precision, backend.max_batch, backend.fixed_batch) == ("fp16", 2, None)
    cuda.events.clear()
    images = [np.random.default_rng(i).integers(0, 255, (20, 30, 3), dtype=np.uint8) for i in range(5)]
    got = Predictor.from_backend(backend)(images)
    assert [e[4][0] for e in cuda.events if e[0] == "execute"] == [2, 2, 1]  # chunks of the profile's N
    want = Predictor(onnx_path, backend="onnxruntime")(images)
    for g, w in zip(got, want):
        assert np.array_equal(g.mask, w.mask) and np.allclose(g.confidence, w.confidence, atol=1e-3)
    for kw, what in ((dict(precision="fp32"), "precision fp16, not fp32"),
                     (dict(max_batch=4), "limit of 2, not 4")):
        with pytest.raises(ValueError, match=what):
            TensorRTBackend(engine, **kw)


def test_engine_that_does_not_deserialise_is_rebuilt_alike(fake: Install, onnx_path: Path) -> None:
    fake("10.13")
    _, engine = _build(onnx_path, max_batch=3)
    side = json.loads(trt_export.sidecar_path(engine).read_text())
    side["vltseg.precision"] = '"fp32"'  # as sidecars said before they recorded the engine's
    trt_export.sidecar_path(engine).write_text(json.dumps(side))
    trt, _ = fake("11.4")  # a TensorRT upgrade: the 10.13 engine no longer loads
    backend = TensorRTBackend(engine)
    assert backend.engine_path != engine and backend.engine_path.exists() and len(builds(trt)) == 1
    assert ".fp16." in backend.engine_path.name and backend.max_batch == 3
    assert _sidecar(backend.engine_path)["precision"] == "fp16"
    onnx_path.unlink()
    with pytest.raises(ModelFileError, match="does not deserialise.*put its .onnx beside it"):
        TensorRTBackend(engine)


def test_unchecked_engine_is_checked_before_it_is_served_as_checked(fake: Install, onnx_path: Path) -> None:
    trt, cuda = fake("11.4")
    _, engine = _build(onnx_path, check=False)
    assert _sidecar(engine)["extra"]["tensorrt.checked"] == "0" and not TensorRTBackend(engine).checked
    cuda.corrupt_outputs = True
    from vltseg_core.export.onnx import ParityError

    with pytest.raises(ParityError):
        _build(onnx_path, check=True)
    assert not trt_export.is_checked(engine)
    cuda.corrupt_outputs = False
    assert _build(onnx_path, check=True)[1] == engine and len(builds(trt)) == 1
    assert trt_export.is_checked(engine) and TensorRTBackend(engine).checked


def test_engine_failing_parity_is_not_cached(fake: Install, onnx_path: Path) -> None:
    from vltseg_core.export.onnx import ParityError

    _, cuda = fake("10.3")
    cuda.corrupt_outputs = True
    with pytest.raises(ParityError, match="TensorRT engine vs ONNX Runtime"):
        _build(onnx_path, precision="fp32")
    assert not list(onnx_path.parent.glob("*.engine*"))


def test_fp32_engine_of_an_fp16_graph_is_refused(fake: Install, tmp_path: Path) -> None:
    from dataclasses import replace

    fake("11.4")
    with pytest.raises(ValueError, match="is an fp16 graph"):
        trt_export.load_or_build(tmp_path / "m.fp16.onnx", replace(_metadata(None), precision="fp16"),
                                 precision="fp32")


def test_tiny_model_export_gives_a_checked_strongly_typed_fp16_engine(fake: Install, tmp_path: Path) -> None:
    """The real tiny segmenter's portable export through the 11.4 fake: its fp16 copy is what
    the engine computes, and that passes the fp16 parity against the fp32 graph."""
    from vltseg_core.export.onnx import read_metadata

    fake("11.4")
    onnx_path = tmp_path / "seg.onnx"
    onnx_path.write_bytes(tiny_export("vltseg_tiny_m2f", "portable").read_bytes())
    _, engine = trt_export.load_or_build(onnx_path, read_metadata(onnx_path))
    assert plan_of(engine)["source"] == str(tmp_path / "seg.fp16.onnx") and trt_export.is_checked(engine)
    assert TensorRTBackend(engine).fixed_batch == 1  # this export's batch is fixed


def test_export_command_writes_the_fp16_onnx_and_a_checked_engine(fake: Install, tmp_path: Path) -> None:
    """`vltseg export --format tensorrt --calibrate` through the 11.4 fake: the fp16 ONNX is written
    (and checked) before the engine is built from it; the sidecar carries the calibration band."""
    import cv2

    from export_helpers import tiny_checkpoint
    from vltseg_core.export.cli import export_checkpoint
    from vltseg_core.runtime.domain_shift import METADATA_KEY

    fake("11.4")
    (tmp_path / "val").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "val" / f"{i}.png"), _images(1, seed=i)[0].transpose(1, 2, 0))
    out = tmp_path / "m.onnx"
    # batch 1: one fp16 parity image, as before dynamic batches were the default (random weights:
    # which pixels of near-tied classes fp16 flips depends on the image)
    written = export_checkpoint(tiny_checkpoint("vltseg_tiny_m2f"), "tensorrt", out, batch=1,
                                calibrate=tmp_path / "val")
    assert written[:2] == [out, tmp_path / "m.fp16.onnx"] and written[2].name.startswith("m.fp16.")
    assert plan_of(written[2])["source"] == str(written[1])
    assert METADATA_KEY in _sidecar(written[2])["extra"] and trt_export.is_checked(written[2])


# ---- the real thing ---------------------------------------------------------------------------

_REASON = rt.tensorrt_unavailable_reason()


@pytest.mark.gpu
@pytest.mark.skipif(_REASON is not None, reason=f"TensorRT test needs tensorrt and a GPU: {_REASON}")
def test_fp16_engine_builds_caches_and_matches_onnxruntime(tmp_path: Path) -> None:
    from vltseg_core.export.onnx import read_metadata

    onnx_path = tmp_path / "seg.onnx"
    onnx_path.write_bytes(tiny_export("vltseg_tiny_m2f", "portable").read_bytes())
    meta = read_metadata(onnx_path)
    runner, engine = trt_export.load_or_build(onnx_path, meta)  # parity vs ORT checked inside
    assert engine.exists() and engine.parent == tmp_path and trt_export.is_checked(engine)
    assert _sidecar(engine)["precision"] == "fp16" and runner.stream.cuda_stream != 0
    stamp = engine.stat().st_mtime_ns
    _, again = trt_export.load_or_build(onnx_path, meta)
    assert again == engine and engine.stat().st_mtime_ns == stamp  # cache hit, no rebuild
    backend = TensorRTBackend(engine)  # the engine file as it is
    assert backend.engine_path == engine and backend.max_batch == runner.max_batch
    engine.write_bytes(b"engine for another GPU")  # does not deserialise -> rebuilt, not fatal
    _, rebuilt = trt_export.load_or_build(onnx_path, meta)
    assert rebuilt == engine and engine.stat().st_size > 1000
