"""``assemble lock``: each variant's Python sets resolved (``locking``, ``lockenvs``, with
what a base's Python holds: ``heldpython``) and its Debian packages pinned (``aptpins``),
written as the manifest's lock; ``lockreport`` what it was asked and what it did."""
