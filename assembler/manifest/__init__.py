"""Manifests and recipes: what a build is asked for, read from YAML with file:line errors.

Its rooms, each a floor of its own (``pyproject.toml``'s contract), top down:

- :mod:`.load`: a manifest loaded (params, target, recipes, models, every check), a
  :class:`~assembler.manifest.load.loaded.Loaded`;
- :mod:`.lock` and :mod:`.hosts`: the lock's file, how it applies and each kind of pin;
  the hosts a build reaches;
- :mod:`.facts`: combinations refused from what indexes and registries publish;
- :mod:`.schema` and :mod:`.requirements`: the models (strict pydantic); the files users
  bring (requirements files, ``pyproject.toml``, ``uv.lock``, pylock);
- :mod:`.text`: YAML that remembers where each value was written; URLs without secrets.
"""

from assembler.manifest.load.manifest import Loaded, load_manifest
from assembler.manifest.schema.model import Manifest, Recipe

__all__ = ["Loaded", "Manifest", "Recipe", "load_manifest"]
