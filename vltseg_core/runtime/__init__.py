"""Inference for vehicles: `Predictor` (numpy in, masks/confidences/boxes out at input resolution)
over torch, ONNX Runtime and TensorRT backends with shared pre/post-processing. No ROS here."""

from vltseg_core.errors import ModelFileError
from vltseg_core.runtime.predictor import BACKENDS, Prediction, Predictor

__all__ = ["BACKENDS", "ModelFileError", "Prediction", "Predictor"]
