"""The workspace: where generated state lives (database, built models, exports)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = PROJECT_ROOT / "data" / "settings.toml"
DB_NAME = "shapdiff.db"


def project_settings() -> dict:
    """The committed project settings (data/settings.toml); empty if absent."""
    try:
        return tomllib.loads(SETTINGS_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def ensure(self) -> "Workspace":
        """Create the workspace folder; a clear error if it cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(
                f"cannot create the workspace {self.root}: {exc.strerror or exc}",
                "choose a writable folder with --workspace DIR",
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise BadInput(
                f"the workspace {self.root} is read-only",
                "choose a writable folder with --workspace DIR (stored results there are untouched)",
            )
        return self


def resolve_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """--workspace, else SHAPDIFF_WORKSPACE, else the project setting (data/workspace)."""
    if path:
        return Workspace(Path(path).expanduser().resolve())
    env = os.environ.get("SHAPDIFF_WORKSPACE")
    if env:
        return Workspace(Path(env).expanduser().resolve())
    rel = project_settings().get("workspace", "data/workspace")
    return Workspace((PROJECT_ROOT / rel).resolve())
