"""Offline replay: the bag's frames through the node's own frame path in this process
(`image_codec.decode` -> `Predictor` -> `outputs.frame_messages`), as fast as the model runs.

The output bag holds the input topics plus the node's outputs and diagnostics under the
node's topic names (/vltseg/<camera>/...), each at its frame's bag time, so it plays beside
the input in RViz or Foxglove."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vltseg_ros.bag import types
from vltseg_ros.bag.read import Bag, BagError, Topics, boxes_of, broken_at, domain_name, mono8, one_line
from vltseg_ros.bag.score import Scorer
from vltseg_ros.bag.write import BagWriter

NODE = "/vltseg"


@dataclass(frozen=True)
class EvalOptions:
    model: Path
    backend: str = "auto"
    threads: int = 0
    camera: str = "camera"
    tolerance_ms: float = 0.0
    window: int = 30
    rate: float = 1.0
    clock: bool = False
    start_timeout: float = 180.0
    outputs: frozenset[str] | None = None  # kinds written to the output bag (None: what the node publishes)


def output_topics(camera: str = "camera") -> dict[str, str]:
    """The node's topic per output kind (a single camera named `camera`)."""
    names = {"segmentation": "segmentation", "color": "segmentation_color", "confidence": "confidence",
             "detections": "detections", "detections_image": "detections_image"}
    return {kind: f"{NODE}/{camera}/{name}" for kind, name in names.items()}


def node_defaults() -> tuple[frozenset[str], float, float]:
    """(published kinds, overlay alpha, score threshold) as the node's parameter defaults."""
    from vltseg_ros import params

    spec = params.PARAMETERS
    kinds = frozenset(o for o in params.OUTPUTS if spec[f"publish.{o}"].default)
    return kinds, float(spec["overlay_alpha"].default), float(spec["score_threshold"].default)


def load_predictor(opts: EvalOptions) -> Any:
    from vltseg_core.runtime.predictor import Predictor

    _, _, threshold = node_defaults()
    try:
        return Predictor(opts.model, backend=None if opts.backend == "auto" else opts.backend, device="cpu",
                         score_threshold=threshold, threads=opts.threads)
    except Exception as exc:  # noqa: BLE001 - a bad model is one line
        raise BagError(f"cannot load model {opts.model}: {one_line(exc)}") from None


def make_scorer(class_names: tuple[str, ...], extra: dict[str, str], opts: EvalOptions, has_gt: bool) -> Scorer:
    from vltseg_core.runtime.domain_shift import band_from_metadata

    return Scorer(class_names, band_from_metadata(extra), int(opts.tolerance_ms * 1e6), opts.window, has_gt)


def copy_side(bag_out: BagWriter, scorer: Scorer, topics: Topics, topic: str, t_ns: int, raw: bytes) -> None:
    """Ground truth and condition messages: scored and copied to the output bag."""
    bag_out.write_raw(topic, bag_out_type(topics, topic), t_ns, raw)
    if topic == topics.gt:
        msg = types.deserialize(raw, types.IMAGE)
        scorer.gt(types.stamp_ns(msg.header), mono8(msg).copy())
    elif topic == topics.domain:
        msg = types.deserialize(raw, topics.domain_type)
        scorer.domain(types.stamp_ns(msg) if hasattr(msg, "stamp") else t_ns, domain_name(msg))
    elif topic == topics.gt_boxes:
        msg = types.deserialize(raw, topics.gt_boxes_type)
        boxes, _, labels, unknown = boxes_of(msg, scorer.names)
        scorer.unknown_box_classes += unknown
        scorer.gt_boxes(types.stamp_ns(msg.header), boxes, labels)


def bag_out_type(topics: Topics, topic: str) -> str:
    known = {topics.image: topics.image_type, topics.gt: types.IMAGE, topics.domain: topics.domain_type,
             topics.gt_boxes: topics.gt_boxes_type}
    return known[topic] or ""


def run_offline(bag: Bag, topics: Topics, opts: EvalOptions, out_bag: Path) -> tuple[Scorer, dict[str, Any]]:
    """Replay `bag` through the model; returns the scorer and run facts (partial: the break)."""
    from vltseg_core.progress import image_progress
    from vltseg_ros import image_codec, outputs
    from vltseg_ros.diagnostics import CameraStats, ModelStats, diagnostic_array

    predictor = load_predictor(opts)
    meta = predictor.metadata
    kinds, alpha, threshold = node_defaults()
    kinds = kinds if opts.outputs is None else kinds & opts.outputs
    style = outputs.Style(tuple(meta.class_names), outputs.palette(meta), alpha,
                          outputs.detection_types("auto"), tuple(meta.tasks))
    scorer = make_scorer(tuple(meta.class_names), meta.extra, opts, topics.gt is not None)
    out_names = output_topics(opts.camera)
    stats = CameraStats(opts.camera, topics.image)
    model_stats = ModelStats({"model": str(opts.model), "preset": meta.preset, "mode": "bag eval offline"})
    facts: dict[str, Any] = {"mode": "offline", "partial": None, "bad_frames": 0, "bad_reason": ""}
    total = bag.counts.get(topics.image) or 0
    bar = image_progress("bag eval", max(total, 1))
    t0 = time.perf_counter()
    with BagWriter(out_bag, "mcap", overwrite=True) as bag_out:
        first = True
        try:
            stream = bag.messages(topics.all())
            for topic, t_ns, raw in stream:
                if first:
                    bag_out.write(f"{NODE}/label_info", t_ns, outputs.label_info_msg(
                        meta, Path(opts.model).name, threshold, types.header_at(t_ns)), latched=True)
                    first = False
                if topic != topics.image:
                    copy_side(bag_out, scorer, topics, topic, t_ns, raw)
                    continue
                bag_out.write_raw(topic, topics.image_type, t_ns, raw)
                msg = types.deserialize(raw, topics.image_type)
                try:
                    image = image_codec.decode(msg)
                except Exception as exc:  # noqa: BLE001 - as the node: a bad frame is counted, not fatal
                    stats.bad(one_line(exc))
                    facts["bad_frames"] += 1
                    facts["bad_reason"] = one_line(exc)
                    continue
                stats.received()
                start = time.perf_counter()
                pred = predictor.predict([image])[0]
                model_ms = (time.perf_counter() - start) * 1e3
                model_stats.called(1, 1)
                for kind, out in outputs.frame_messages(image, pred, msg.header, kinds, style):
                    bag_out.write(out_names[kind], t_ns, out)
                stamp = types.stamp_ns(msg.header)
                record = scorer.prediction(stamp, pred.mask, pred.confidence, model_ms=model_ms)
                if "det" in style.tasks:
                    scorer.pred_boxes(stamp, pred.boxes, pred.scores, pred.labels, image.shape[:2])
                stats.published(model_ms, model_ms, record.mean_confidence,
                                scorer.monitor.state if scorer.monitor else None)
                bag_out.write("/diagnostics", t_ns, diagnostic_array(msg.header.stamp, [
                    stats.status(NODE, scorer.band), model_stats.status(NODE)]))
                bar.update(len(scorer.frames))
        except BagError as exc:
            facts["partial"] = bag_out.custom["vltseg.partial"] = str(exc)
        except types.MessageError as exc:
            facts["partial"] = bag_out.custom["vltseg.partial"] = str(broken_at(stream, exc))
        finally:
            bar.close()
    facts["seconds"] = time.perf_counter() - t0
    facts["model"] = {"path": str(opts.model), "preset": meta.preset, "backend": type(predictor.backend).__name__,
                      "classes": len(meta.class_names)}
    return scorer, facts
