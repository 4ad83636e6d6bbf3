"""vltseg_core: VLTSeg models, data, training, evaluation, export and runtime (no ROS imports)."""

__version__ = "0.1.0"
