"""The user's config file: settings of a machine that no manifest should carry.

``$XDG_CONFIG_HOME/assemble/config.toml`` (else ``~/.config/assemble/config.toml``), read
when it exists. One key today:

```toml
cache-trust = ["/etc/assemble/ci.pub"]   # --cache-trust's keys when the command line gives none
```

Relative paths are relative to the file. Any other key is refused (exit 2): a misspelt
trust setting must not be ignored.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import InputError

KEYS = ("cache-trust",)


@dataclass(frozen=True)
class UserConfig:
    """What the config file says (nothing when there is none)."""

    path: Path | None = None
    cache_trust: tuple[Path, ...] = ()


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the config file is looked for."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "assemble" / "config.toml"


def read_config(path: Path | None = None) -> UserConfig:
    """The config at ``path`` (default :func:`config_path`); an empty one when there is no
    file. InputError for a file that is not TOML or holds a key it does not know."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return UserConfig()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not TOML ({e})") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InputError(f"{path}: unknown setting {', '.join(unknown)}", hint=f"it knows {', '.join(KEYS)}")
    trust = data.get("cache-trust", [])
    if not isinstance(trust, list) or not all(isinstance(t, str) and t for t in trust):
        raise InputError(f"{path}: cache-trust must be a list of public key files")
    return UserConfig(path, tuple(path.parent / Path(t).expanduser() for t in trust))
