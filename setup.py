"""Build hook: the recipes in ``layers/`` ship inside the package, as ``assembler/recipes/``.

Everything else is in pyproject.toml. The repository keeps its recipes in ``layers/``
(its fixed layout); an installed ``assemble`` finds its own in ``assembler/recipes/``
(``assembler.manifest.load.recipes.packaged_recipes``). An editable install reads ``layers/`` of the
checkout instead, so nothing is copied for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LAYERS = Path(__file__).resolve().parent / "layers"


class BuildPyWithRecipes(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "assembler" / "recipes"
        target.mkdir(parents=True, exist_ok=True)
        recipes = sorted(LAYERS.glob("*.yaml"))
        if not recipes:
            raise SystemExit(f"setup.py: no recipes in {LAYERS} (an sdist must include layers/*.yaml)")
        for recipe in recipes:
            shutil.copyfile(recipe, target / recipe.name)


setup(cmdclass={"build_py": BuildPyWithRecipes})
