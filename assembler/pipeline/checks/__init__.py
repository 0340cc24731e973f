"""What a build is checked by once its image is stacked, and what is checked before: the
dependency check (``depcheck``), the SBOM and provenance (``attest``), the image's tests
run on a built image, here or as Slurm jobs (``runimage``, ``slurmtests``), the hosts a build
will reach (``preflight``) and the ``--set`` values that change nothing (``idle``)."""
