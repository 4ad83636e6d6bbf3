"""What the runtime has: library versions, devices, ROS availability (for bug reports and demos)."""

from __future__ import annotations

import importlib
import platform


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure as text
        return f"not available ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "available"))


def environment_report() -> dict[str, str]:
    """Versions of python, torch, open_clip, timm, onnxruntime, rclpy and the vltseg msgs."""
    import torch

    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "threads": str(torch.get_num_threads()),
    }
    for name in ("open_clip", "timm", "onnxruntime", "rclpy"):
        report[name] = _version(name)
    report["vltseg_ros.msg"] = _version("vltseg_ros.msg")
    return report
