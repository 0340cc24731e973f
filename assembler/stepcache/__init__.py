"""The registry step cache (``--cache-to``, ``--cache-from``): step results as OCI manifests
tagged by key (:mod:`.steps`), steps' kept and ``shared_cache:`` folders as chunked
``ccache-<key>`` entries (:mod:`.compile`), facts read from layers as ``facts-<key>``
entries (:mod:`.facts`), and who signed an entry, checked before it is used (:mod:`.trust`).
Above the image formats: it signs as :mod:`assembler.transports.signatures` does."""
