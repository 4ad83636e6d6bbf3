"""The set-up's promise: a clean environment (nothing sourced, no LD_LIBRARY_PATH) imports
rclpy, vltseg_core and the generated msgs, and the console commands start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _clean_env() -> dict[str, str]:
    return {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}


@pytest.mark.ros
def test_imports_from_clean_environment(tmp_path: Path) -> None:
    code = (
        "import rclpy, vltseg_core; from vltseg_ros.msg import Detection2DArray, LabelInfo;"
        "import vltseg_ros.cli; print(LabelInfo().ignore_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


@pytest.mark.parametrize("command", [["vltseg", "--help"], ["vltseg-ros", "info"]])
def test_console_commands(tmp_path: Path, command: list[str]) -> None:
    exe = BIN / command[0]
    if not exe.exists():
        pytest.skip(f"{exe} not installed (run scripts/setup.sh)")
    if command[0] == "vltseg-ros" and not Path(sys.prefix, "share", "vltseg_ros").exists():
        pytest.skip("vltseg_ros msgs not built into this environment")
    out = subprocess.run([str(exe), *command[1:]], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("Usage" in out.stdout) if command[0] == "vltseg" else ("Detection2DArray" in out.stdout)


def test_setup_names_missing_system_tool(tmp_path: Path) -> None:
    """With cmake missing from PATH the set-up stops at once, naming the Debian package."""
    import shutil

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("python3", "dirname", "bash", "make", "c++", "cc"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    setup = Path(__file__).parents[1] / "scripts" / "setup.sh"
    env = {"HOME": str(tmp_path), "PATH": str(bindir), "VLTSEG_VENV": str(tmp_path / "venv")}
    out = subprocess.run([str(bindir / "bash"), str(setup)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "'cmake' not found; install it with: apt-get install -y cmake" in out.stderr
    assert not (tmp_path / "venv").exists(), "nothing may be created before the checks pass"


def test_pip_install_gives_core_and_commands_without_ros(tmp_path: Path) -> None:
    """`pip install .` packages both Python packages and both console commands; `vltseg`
    itself runs when rclpy cannot be imported."""
    import zipfile

    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("vltseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vltseg_core/cli.py" in names and "vltseg_ros/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vltseg = vltseg_core.cli:app" in text and "vltseg-ros = vltseg_ros.cli:main" in text

    no_ros = "import sys; sys.modules['rclpy'] = None; from vltseg_core.cli import app; app(['--help'])"
    run = subprocess.run([sys.executable, "-c", no_ros], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Usage" in run.stdout
