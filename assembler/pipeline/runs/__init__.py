"""One variant's run: the :class:`~assembler.pipeline.runs.run.Run` it is put together as
(``run``), the :class:`~assembler.pipeline.runs.resolve.Plan` a walk in the ``Planning``
mode gives (``resolve``), the ``Building`` mode that makes what is missing (``building``),
the :class:`~assembler.pipeline.runs.builder.Build` that owns its build (``builder``), a
Slurm node's build of one step (``slurmnode``) and ``artifact:`` outputs (``artifacts``).
(Not ``build/``: tools and ignore files take a folder of that name for build output.)"""
