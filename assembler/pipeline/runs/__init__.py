"""A plan and its build: the :class:`~assembler.pipeline.build.resolve.Plan` a walk in the
``Planning`` mode gives (``resolve``), the ``Building`` mode that makes what is missing
(``building``), the :class:`~assembler.pipeline.build.builder.Build` that owns one variant's
build (``builder``), a Slurm node's build of one step (``slurmnode``) and ``artifact:``
outputs (``artifacts``)."""
