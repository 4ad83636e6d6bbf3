"""What the runtime has (library versions, devices, ROS availability: for bug reports and demos)
and the process-wide CPU thread setting that training and evaluation share."""

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


def apply_threads(threads: int) -> None:
    """Pin CPU intra-op threads (0 keeps torch's default). Small models gain little from a
    second thread, and on a shared machine a busy core stalls every multi-threaded op
    (measured: 10x slower)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
