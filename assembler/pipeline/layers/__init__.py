"""Layers made without a container, and what every layer is fitted and converted with:
one module per layer kind (``kinds``), the ``pip:``/``url:`` layers' shared part
(``prebuilt_layers``), fitting and converting (``setup``), big layers cut along their
packages (``cutlayers``), what reads a layer as it is written (``observers``, ``exportagent``)
and what to do with what the cache does not hold (``maker``)."""
