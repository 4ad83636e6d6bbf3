"""VLTSeg models: CLIP / EVA-02 encoders, simple feature pyramid, Mask2Former head,
ViTDet-style detection head, presets (see docs/DESIGN.md, "Model API")."""

from .build import (
    PRESETS,
    Preset,
    build_from_preset,
    build_model,
    checkpoint_payload,
    count_flops,
    get_preset,
    list_presets,
    load_checkpoint,
    model_summary,
    param_groups,
    print_model_table,
    save_checkpoint,
)
from .detection_inference import Detections
from .encoder import (
    OPEN_CLIP_TRUNKS,
    LoadReport,
    ViTEncoder,
    convert_open_clip_state_dict,
    create_trunk,
    load_trunk_weights,
    read_state_dict,
)
from .segmentor import CLIP_MEAN, CLIP_STD, ModelOutput, VLTSeg, semantic_inference

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "Detections", "OPEN_CLIP_TRUNKS", "PRESETS", "LoadReport", "ModelOutput",
    "Preset",
    "VLTSeg", "ViTEncoder", "build_from_preset", "build_model", "checkpoint_payload",
    "convert_open_clip_state_dict",
    "count_flops", "create_trunk", "get_preset", "list_presets", "load_checkpoint", "load_trunk_weights",
    "model_summary", "param_groups", "print_model_table", "read_state_dict", "save_checkpoint",
    "semantic_inference",
]
