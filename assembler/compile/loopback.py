"""``python -m assembler.compile.loopback ARGV...``: bring the loopback interface up, then
exec ARGV. Run as the first program of a new network namespace (``unshare --net``), where
``lo`` starts down: a test may then talk to a server it starts on 127.0.0.1, and nothing
else (buildah 1.28 refuses ``--network`` with ``--isolation chroot``, so the namespace is
made around it).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union


def loopback_up() -> None:
    """Set ``lo`` up in this process's network namespace (OSError when not allowed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m assembler.compile.loopback ARGV...", file=sys.stderr)
        return 2
    try:
        loopback_up()
    except OSError as e:
        print(f"assemble: cannot bring the loopback interface up: {e}", file=sys.stderr)
        return 125
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
