"""Errors for model files (raised by the runtime and the export readers), each with a one-line
message naming the file. A leaf module: `export.metadata` and `runtime` both import it."""

from __future__ import annotations

from pathlib import Path


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable, corrupt or not a vltseg export."""

    def __init__(self, path: str | Path, reason: str) -> None:
        first_line = (reason.strip().splitlines() or ["unknown error"])[0]
        super().__init__(f"{path}: {first_line}")
        self.path = Path(path)
        self.reason = first_line


def require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such model file" if not path.exists() else "not a file")
    return path
