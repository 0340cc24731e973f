"""Files fetched over HTTP, pinned by sha256 (:mod:`.pinned`): a wheel or sdist from an
index, a ``url:`` layer's file, a model's file from the Hugging Face Hub or a URL, each
streamed into the cache's blob store, bounded in size and time, stored only when its
sha256 is the one pinned. One room that ``python/``, ``weights/`` and the pipeline's
``url:`` kind use alike, below them all, above the registry client whose deadlines and
retry policy it shares."""
