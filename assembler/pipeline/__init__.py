"""The pipeline :mod:`assembler.assemble` puts together, in rooms on floors (``pyproject.toml``'s
import-linter contract; a room imports only from its own floor's room and those below)::

    checks | lock      what is checked before and after a build | ``assemble lock``
    runs               a variant's Run, its plan, its build, a Slurm node's step, artifact outputs
    walk               one walk: bases, sources, steps decided, layers stacked, its modes
    steps              where a compile step runs: local, Slurm, side by side
    layers | image     layers made here and their kinds | what the image says of itself
    store              step results kept, in the cache and in a registry, and their origins
    variants           targets and matrices: one loaded manifest per image
    writers            an output's writer; a run's writers as one (a tee)
    options | graph    the option groups each part reads | the steps' graph
"""
