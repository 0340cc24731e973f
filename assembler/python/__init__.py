"""Python packages: an index's wheels, sdists and release dates (:mod:`.index`, its files
fetched by :mod:`assembler.fetch.pinned`), one uv resolution
(:mod:`.resolve`), an environment resolved as one whole (:mod:`.env`) and each set's slice of
it (:mod:`.slices`), PyPI's build standing in for an index that cannot be reached
(:mod:`.standin`). A base's digest and a git commit, the lock's other pins, are resolved by
:mod:`assembler.pipeline.lock.lockinputs`."""
