"""The parts of the pipeline :mod:`assembler.assemble` puts together: the Plan and how it
is resolved, the layers made without a container, the image config, and the writers."""
