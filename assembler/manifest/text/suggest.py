""" "Did you mean": the known name closest to a mistyped one, for the hint of an error that
refuses a name (a manifest key, a target, a step of ``--rebuild``, a param of ``--set``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's ratio: 0.7 takes "brotli" for "brotlii" (0.92), "bootstrap" for "bootsrap"
# (0.94), "layers" for "lauer" (0.73), not "cuda" for "cudnn" (0.67): below it a guess
# would mislead more than it helps.
_CUTOFF = 0.7


def closest(word: str, known: Iterable[str]) -> str | None:
    """The name of ``known`` most like ``word`` (None: none is close; ``word`` itself is not
    a suggestion)."""
    names = sorted({k for k in known if k != word})
    matches = difflib.get_close_matches(word, names, n=1, cutoff=_CUTOFF)
    if not matches:  # a case slip (MAX_JOBS for max_jobs) scores low with difflib
        matches = [k for k in names if k.lower() == word.lower()][:1]
    return matches[0] if matches else None


def known_names(word: str, known: Iterable[str], what: str) -> str:
    """A hint naming the closest of ``known`` to ``word``, then all of them:
    ``did you mean 'brotli'? steps: brotli, cuda``."""
    names = sorted(set(known))
    guess = closest(word, names)
    listed = f"{what}: {', '.join(names) or 'none'}"
    return f"did you mean {guess!r}? {listed}" if guess is not None else listed
