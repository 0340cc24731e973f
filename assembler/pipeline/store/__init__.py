"""Where step results are kept and where each came from: the local records and a
registry step cache over them (``stepstore``, ``registrycache``), the entries used and
what is built on them (``origins``), a build's bases' blobs fetched when read
(``baseblobs``), compile steps' package layers (``toolchains``) and the checks an entry
from a registry passes before it is used (``prebuilt_checks``)."""
