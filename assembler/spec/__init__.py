"""Manifests and recipes: pydantic models and YAML loading with file:line errors."""

from assembler.spec.load import Loaded, load_manifest
from assembler.spec.model import Manifest, Recipe

__all__ = ["Loaded", "Manifest", "Recipe", "load_manifest"]
