"""Datasets in their official layouts, the synthetic domain-shift benchmark and transforms.

Import submodules directly (``vltseg_core.data.datasets``, ``.synth``, ``.transforms``); this
package file stays empty so that light users (e.g. the runtime reading class names from
``labels``) do not pay for torch/scipy imports.
"""
