"""Debian bases and the packages the lock pins for them, in one room.

- :mod:`.bootstrap`: a ``bootstrap:`` base made by mmdebstrap from an apt mirror (the
  locked packages, checked again when it is made), an image like any other base.
- :mod:`.aptlock`: what a bootstrapped base and each ``packages:`` layer or compile step's
  ``packages:`` install, resolved by apt without installing anything (``assemble lock``),
  and the mirror checked to still serve it (a build with the lock).
- :mod:`.aptreasons`: apt's own reason for a package it refuses, said first in an error.

Above the transports (a bootstrapped base is written as their image), below the compile
steps and the pipeline, which install and check what the lock pins through it. The lock's
file format for these pins is :mod:`assembler.manifest.lock.debpins`.
"""
