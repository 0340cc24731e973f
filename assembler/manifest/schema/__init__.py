"""The shape of a manifest and a recipe: pydantic models, strict (unknown keys are errors),
checking types and form only. :mod:`.model` is the root (``Manifest``, ``Recipe``, compile
steps); the layer kinds' table is :mod:`.layers`; the other modules are one part each
(image config, tests, bases and sources, weights, GPUs, Slurm resources, Python sets,
prebuilt ``pip:``/``url:`` layers and the pinned wheels they read (:mod:`.pinned`),
``constraints:``), on the field types of :mod:`.fields`.
:mod:`.setuses` walks a manifest's Python sets. References between parts are checked when
a manifest loads (:mod:`assembler.manifest.load.checks`), not here."""
