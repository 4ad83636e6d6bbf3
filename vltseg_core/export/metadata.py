"""What a deployed model file must carry so a vehicle needs nothing else: classes, colours,
normalisation, input size, preset, outputs.

Stored as ONNX `metadata_props` (string key/values, JSON values under the `vltseg.` prefix) and
as a JSON sidecar next to TensorRT engines, which have no metadata of their own. Pure Python:
the runtime reads it from an ONNX Runtime session without importing `onnx`.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from vltseg_core.errors import ModelFileError

PREFIX = "vltseg."
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    """Everything about an exported model except its weights.

    input_size is (H, W) of the graph's fixed input; pixel_mean/std are 0..255 RGB; tasks is a
    subset of ("seg", "det"); outputs lists graph output names in order.
    """

    preset: str
    num_classes: int
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    input_size: tuple[int, int]
    input_dtype: str = "uint8"
    tasks: tuple[str, ...] = ("seg",)
    outputs: tuple[str, ...] = ()
    max_detections: int = 0
    batch: int | None = 1  # None: dynamic batch dimension
    precision: str = "fp32"
    confidence: str = ""  # how per-pixel confidence was derived from the model's class scores
    target: str = "portable"  # "onnxruntime": the graph has ONNX Runtime contrib ops
    extra: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """Flatten to ONNX metadata_props (every value JSON-encoded)."""
        props = {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}
        props[PREFIX + "format_version"] = json.dumps(FORMAT_VERSION)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Inverse of `to_props`; raises KeyError naming the first missing key."""
        names = {f.name for f in fields(cls)}
        values = {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is _MISSING]
        if missing:
            raise KeyError(f"model metadata lacks {PREFIX}{missing[0]}")
        kept = {k: v for k, v in values.items() if k in names}
        return cls(**_tuplify(kept))

    def to_json(self) -> str:
        return json.dumps(self.to_props(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        return cls.from_props(json.loads(text))


_MISSING = fields(ModelMetadata)[0].default  # dataclasses.MISSING without importing it twice


def read_session_metadata(session: object, path: Path) -> ModelMetadata:
    """The metadata of an ONNX Runtime session over `path`; ModelFileError if it has none."""
    props = dict(session.get_modelmeta().custom_metadata_map)  # type: ignore[attr-defined]
    try:
        return ModelMetadata.from_props(props)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(path, f"not a vltseg export ({exc})") from None


def _tuplify(values: dict[str, object]) -> dict[str, object]:
    """JSON gives lists; the frozen dataclass wants (nested) tuples so instances compare equal."""
    out: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[key] = value
    return out


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(num_classes))


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours (golden-ratio hue steps) when a checkpoint names none."""
    colors = []
    for i in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colors)
