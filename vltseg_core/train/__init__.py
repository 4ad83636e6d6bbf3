"""Training: YAML configs with dotted overrides, the DDP-ready loop with exact resume.

Import submodules directly (``vltseg_core.train.engine``); this file stays light so that
``vltseg --help`` does not import torch.
"""
