"""The lock (``manifests/NAME.lock``): its file format (:mod:`.file`), what it pins and how
it is applied to a manifest (:mod:`.apply`), one module per kind of pin: Python sets
resolved per environment (:mod:`.pyenvs`: the environments an image and its steps end
with), Debian packages (:mod:`.debpins`), and the floating inputs, a base's tag or a git
ref (:mod:`.inputpins`). Resolving them (the network) is :mod:`assembler.pipeline.lock`'s."""
