"""config/perception.yaml and the README document every node parameter with its default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 not importable; run scripts/setup.sh")
from vltseg_ros.params import CAMERA_PARAMETERS, PARAMETERS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def test_params_yaml_lists_every_parameter_with_its_default() -> None:
    params = _flatten(yaml.safe_load((REPO / "config" / "perception.yaml").read_text())["/**"]["ros__parameters"])
    cameras = {k: v for k, v in params.items() if k.startswith("camera.")}
    node_wide = {k: v for k, v in params.items() if not k.startswith("camera.")}
    assert node_wide == {name: spec.default for name, spec in PARAMETERS.items()}
    assert set(cameras) == {f"camera.camera.{key}" for key in CAMERA_PARAMETERS}
    assert cameras["camera.camera.topic"] == "camera/image_raw"


def test_readme_documents_every_parameter() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name in [*PARAMETERS, *(f"camera.<name>.{k}" for k in CAMERA_PARAMETERS)]
               if f"`{name}`" not in readme]
    assert not missing, f"README lacks {missing}"
