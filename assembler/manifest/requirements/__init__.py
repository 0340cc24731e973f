"""What users bring besides the manifest, read only where a manifest names it: a Python
set's requirements file, ``pyproject.toml``, ``uv.lock`` or pylock (:mod:`.reqfiles`), and
the files their ``-r``/``-c`` lines name, kept inside the project (:mod:`.projectfiles`)."""
