"""What produced a result: library versions and stable hashes of settings."""

from __future__ import annotations

import hashlib
import json
import platform
from functools import lru_cache
from importlib import metadata
from typing import Any

import engine

_PACKAGES = ("torch", "transformers", "shap", "tokenizers", "numpy", "scikit-learn")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of the libraries that shape results (read from metadata, no imports)."""
    out = {"shapdiff": engine.__version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal settings give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_hash(settings: dict[str, Any], length: int = 16) -> str:
    """A short stable hash of a settings dict."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:length]
