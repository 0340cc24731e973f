"""Loading a manifest, the top floor of :mod:`assembler.manifest`: the YAML read with
where each value is, params substituted (:mod:`.params`), the target picked, recipes
expanded (:mod:`.recipes`), the models validated (:mod:`.validation`), the lock applied,
and every cross-check run (:mod:`.checks`, :mod:`.constraints`, the facts); the result is a
:class:`~assembler.manifest.load.loaded.Loaded` (:mod:`.manifest`: ``load_manifest``).
Also here: the CUDA base a manifest's torch picks (:mod:`.cudabase`) and the placeholders
labels fill in once a build knows them (:mod:`.sourcefacts`, :mod:`.labelfacts`)."""
