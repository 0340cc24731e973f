"""The hosts a build reaches, read from the manifest before anything runs: each step's and
layer's hosts with why (:mod:`.reach`, which ``plan`` shows and preflight checks), from
the text of commands and the indexes of the tools they run (:mod:`.toolhosts`)."""
