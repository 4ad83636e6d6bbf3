"""ONNX export through the wrapper: graph contract, metadata, parity (stub model for the
wrapper's own logic; tiny presets for the real seg / det / joint models)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export_helpers import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES, tiny_checkpoint, tiny_dynamic_export, tiny_export
from stub_models import StubModel
from vltseg_core.export.metadata import ModelMetadata, default_class_names, default_palette
from vltseg_core.export.onnx import (
    ExportModule,
    ParityError,
    check_parity,
    compare_outputs,
    export_onnx,
    parity_images,
    read_metadata,
    run_onnxruntime,
    run_torch,
)
from vltseg_core.export.variants import convert_fp16


def _stub_metadata(batch: int | None = 1) -> ModelMetadata:
    return ModelMetadata(
        preset="stub", num_classes=5, class_names=default_class_names(5),
        class_colors=default_palette(5), pixel_mean=(123.7, 116.3, 103.5),
        pixel_std=(58.4, 57.1, 57.4), input_size=(64, 96), batch=batch, max_detections=10,
    )


@pytest.fixture(scope="module", params=[("seg",), ("det",), ("seg", "det")], ids="+".join)
def stub_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = StubModel(tasks=request.param).eval()
    path = tmp_path_factory.mktemp("stub") / "stub.onnx"
    return model, export_onnx(model, path, _stub_metadata())


def test_stub_export_contract(stub_export) -> None:
    model, result = stub_export
    proto = onnx.load(str(result.path))
    assert proto.opset_import[0].version >= 17
    assert "GridSample" not in {n.op_type for n in proto.graph.node}  # gather rewrite applied
    assert result.parity is not None and result.parity.ok
    outputs = run_onnxruntime(result.path, parity_images(1, 64, 96, seed=9).numpy())
    assert tuple(outputs) == result.metadata.outputs
    if "seg" in model.tasks:
        assert outputs["class_ids"].dtype == np.uint8 and outputs["class_ids"].shape == (1, 64, 96)
        conf = outputs["confidence"]
        assert conf.dtype == np.float32 and 0 <= conf.min() and conf.max() <= 1 + 1e-6
    if "det" in model.tasks:
        scores, count = outputs["scores"][0], int(outputs["num_detections"][0])
        assert outputs["boxes"].shape == (1, 10, 4) and scores.shape == (10,)
        assert 0 < count and np.all(np.diff(scores) <= 0)  # sorted, best first
        assert np.all(scores[count:] == 0) and np.all(outputs["boxes"][0, count:] == 0)


def test_metadata_round_trips_through_the_file(stub_export) -> None:
    _, result = stub_export
    assert read_metadata(result.path) == result.metadata


def test_parity_failure_raises(stub_export) -> None:
    model, result = stub_export
    other = StubModel(tasks=model.tasks).eval()  # different random weights
    module = ExportModule(other, result.metadata.tasks, max_detections=10)
    with pytest.raises(ParityError, match="parity failed"):
        check_parity(module, result.path, parity_images(1, 64, 96, seed=4))


def test_compare_outputs_thresholds() -> None:
    ids = np.zeros((1, 100, 100), np.uint8)
    conf = np.full((1, 100, 100), 0.5, np.float32)
    ref = {"class_ids": ids, "confidence": conf}
    assert compare_outputs(ref, {"class_ids": ids, "confidence": conf + 5e-4}).ok
    assert not compare_outputs(ref, {"class_ids": ids, "confidence": conf + 2e-3}).ok
    flipped = ids.copy()
    flipped[0, :2, :] = 1  # 0.2 % of pixels
    assert not compare_outputs(ref, {"class_ids": flipped, "confidence": conf}).ok


def test_dynamic_batch_when_the_model_allows_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = export_onnx(StubModel().eval(), tmp_path / "dyn.onnx", _stub_metadata(batch=None))
    assert result.metadata.batch is None
    for batch in (1, 3):
        out = run_onnxruntime(result.path, parity_images(batch, 64, 96).numpy())
        assert out["class_ids"].shape == (batch, 64, 96)


@pytest.mark.parametrize("preset", ["vltseg_tiny_m2f", "vltseg_tiny_joint",
                                    pytest.param("vltseg_tiny_det", marks=pytest.mark.slow)])
def test_default_export_takes_any_batch(preset: str) -> None:
    """`vltseg export` writes one graph for any batch (seg, det, joint): batch 1 and 3 through
    the same file give eager torch's outputs (a ROS node batches its cameras through it)."""
    from vltseg_core.runtime.checkpoint import load_model_and_metadata

    path = tiny_dynamic_export(preset)
    meta = read_metadata(path)
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert meta.batch is None and not dim.HasField("dim_value")
    model, _ = load_model_and_metadata(tiny_checkpoint(preset))
    module = ExportModule(model, meta.tasks, max_detections=meta.max_detections,
                          confidence=meta.confidence).eval()
    for batch in (1, 3):
        images = parity_images(batch, *meta.input_size, seed=11)
        torch_out, graph_out = run_torch(module, images), run_onnxruntime(path, images.numpy())
        assert all(v.shape[0] == batch for v in graph_out.values())
        report = compare_outputs(torch_out, graph_out)
        assert report.ok, report
    if "det" in meta.tasks:
        assert int(graph_out["num_detections"].min()) > 0


def test_masked_attention_bias_is_not_copied_per_head_in_the_graph() -> None:
    """The decoder's -inf bias stays [B, 1, Q, h*w] in the exported graph (broadcast over the
    heads), never a [B*heads, Q, h*w] copy."""
    from vltseg_core.models import get_preset

    preset = get_preset("vltseg_tiny_m2f")
    heads, queries = preset.dec_heads, preset.num_queries
    path = tiny_export("vltseg_tiny_m2f")  # batch 1, 128 x 256
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes = {tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in graph.value_info}
    for cells in (16 * 32, 8 * 16):  # strides 8 and 16 (stride 32's 32 cells = the hidden width)
        assert (1, 1, queries, cells) in shapes
        assert (heads, queries, cells) not in shapes


def test_float_input_graph(tmp_path: Path) -> None:
    torch.manual_seed(0)
    meta = replace(_stub_metadata(), input_dtype="float32")
    result = export_onnx(StubModel().eval(), tmp_path / "f.onnx", meta, class_scores=True)
    proto = onnx.load(str(result.path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert result.metadata.outputs[-1] == "class_scores"


def test_fp16_variant_agrees(stub_export, tmp_path: Path) -> None:
    _, result = stub_export
    fp16 = convert_fp16(result.path, tmp_path / "m.fp16.onnx")
    assert read_metadata(fp16).precision == "fp16"
    images = parity_images(1, 64, 96, seed=5).numpy()
    report = compare_outputs(run_onnxruntime(result.path, images), run_onnxruntime(fp16, images),
                             score_tol=2e-2, min_agreement=0.99, strict_detections=False)
    assert report.ok, report


def test_tiny_seg_export_via_cli_function() -> None:
    path = tiny_export("vltseg_tiny_m2f")  # raises ParityError if ORT and torch disagree
    meta = read_metadata(path)
    assert meta.preset == "vltseg_tiny_m2f" and meta.tasks == ("seg",)
    assert meta.class_names == CLASS_NAMES and meta.class_colors == CLASS_COLORS
    assert meta.num_classes == NUM_CLASSES and meta.input_size == (128, 256)
    assert "GridSample" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    for variant in ("fp16", "int8"):
        assert read_metadata(path.with_name(f"{path.stem}.{variant}.onnx")).precision == variant


def _domains(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        name = f"{node.domain or 'ai.onnx'}.{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_onnxruntime_target_fuses_the_encoder_attention() -> None:
    """One com.microsoft.MultiHeadAttention per encoder block (the parity check inside the
    export compares it with the unfused model); the portable export has standard ops only."""
    from vltseg_core.models import build_model

    depth = len(build_model("vltseg_tiny_m2f", NUM_CLASSES).encoder.trunk.blocks)
    fused, portable = tiny_export("vltseg_tiny_m2f"), tiny_export("vltseg_tiny_m2f", "portable")
    assert _domains(fused).get("com.microsoft.MultiHeadAttention") == depth
    assert read_metadata(fused).target == "onnxruntime"
    assert all(op.startswith("ai.onnx.") for op in _domains(portable))
    assert read_metadata(portable).target == "portable"


def test_window_attention_exports_fused_with_padding(tmp_path: Path) -> None:
    """ViTDet-style windows (a 3-token window on the 8x16 grid: padded to 9x18) export with
    parity (checked inside) and one fused attention per window call: 2 per windowed block
    (windows, class token) and 1 for the global block."""
    from vltseg_core.export.cli import export_checkpoint
    from vltseg_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", NUM_CLASSES, window_size=3, global_blocks=(3,))
    save_checkpoint(model, tmp_path / "windowed.pt")
    (path,) = export_checkpoint(tmp_path / "windowed.pt", "onnx", tmp_path / "windowed.onnx", fp16=False)
    assert _domains(path).get("com.microsoft.MultiHeadAttention") == 2 * 3 + 1


def test_eva02_attention_with_rotary_embedding_exports_fused(tmp_path: Path) -> None:
    from vltseg_core.models import build_model
    from vltseg_core.runtime.checkpoint import metadata_for

    torch.manual_seed(0)
    model = build_model("vltseg_tiny_eva02_p14_m2f", NUM_CLASSES).eval()
    meta = metadata_for(model, "vltseg_tiny_eva02_p14_m2f", NUM_CLASSES)
    result = export_onnx(model, tmp_path / "eva.onnx", meta)  # parity-checked
    assert result.parity is not None and result.parity.class_agreement >= 0.999
    assert _domains(result.path).get("com.microsoft.MultiHeadAttention") == len(model.encoder.trunk.blocks)


def test_export_target_is_validated(tmp_path: Path) -> None:
    import typer

    from vltseg_core.export.cli import export_checkpoint

    with pytest.raises(ValueError, match="target must be one of"):
        export_onnx(StubModel().eval(), tmp_path / "x.onnx", _stub_metadata(), target="tensorrt")
    with pytest.raises(typer.BadParameter, match="--target must be one of"):
        export_checkpoint(tmp_path / "none.pt", "onnx", target="trt")
    with pytest.raises(typer.BadParameter, match="standard ONNX ops only"):
        export_checkpoint(tmp_path / "none.pt", "tensorrt", target="onnxruntime")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["vltseg_tiny_det", "vltseg_tiny_joint"])
def test_tiny_det_and_joint_export_parity(preset: str) -> None:
    path = tiny_export(preset)  # parity-checked inside
    meta = read_metadata(path)
    assert "det" in meta.tasks and meta.max_detections == 20 and meta.batch == 1
    out = run_onnxruntime(path, parity_images(1, *meta.input_size, seed=6).numpy())
    assert out["boxes"].shape == (1, 20, 4) and out["labels"].dtype == np.int64


def test_reduced_precision_detections_compare_the_best_score_only() -> None:
    ref = {"boxes": np.array([[[0, 0, 10, 10], [5, 5, 9, 9]]], np.float32),
           "scores": np.array([[0.9, 0.5]], np.float32), "labels": np.array([[1, 2]]),
           "num_detections": np.array([2])}
    swapped = {"boxes": ref["boxes"][:, ::-1], "scores": np.array([[0.88, 0.52]], np.float32),
               "labels": ref["labels"][:, ::-1], "num_detections": np.array([2])}
    assert not compare_outputs(ref, swapped).ok  # fp32: rows must match
    assert compare_outputs(ref, swapped, score_tol=2e-2, strict_detections=False).ok
    broken = dict(swapped, scores=np.array([[0.3, 0.1]], np.float32))
    assert not compare_outputs(ref, broken, score_tol=2e-2, strict_detections=False).ok


def test_detection_graph_with_no_detection_left(tmp_path: Path) -> None:
    """Every score under the threshold: NMS sees zero boxes (the data-dependent edge the
    batched_nms rewrite exists for); the graph still returns N zero rows."""
    torch.manual_seed(0)
    model = StubModel(tasks=("det",)).eval()
    with torch.no_grad():
        model.det_head.bias[4:] = -20.0  # sigmoid(class logits) ~ 0 < 0.3 threshold
    result = export_onnx(model, tmp_path / "empty.onnx", _stub_metadata())
    out = run_onnxruntime(result.path, parity_images(1, 64, 96, seed=3).numpy())
    assert int(out["num_detections"][0]) == 0
    assert not out["scores"].any() and not out["boxes"].any()
