"""``assemble lock``: each variant's Python sets resolved (``locking``, ``lockenvs``, with
what a base's Python holds: ``heldpython``), its Debian packages pinned (``aptpins``) and
its floating inputs, a base's tag and a git ref (``lockinputs``), written as the manifest's
lock; ``lockreport`` what it was asked and what it did."""
