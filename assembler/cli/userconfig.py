"""The user's config file: settings of a machine that no manifest should carry.

``$XDG_CONFIG_HOME/assemble/config.toml`` (else ``~/.config/assemble/config.toml``), read
when it exists. Its keys:

```toml
cache-trust = ["/etc/assemble/ci.pub"]   # --cache-trust's keys when the command line gives none
cache-max-size = "200G"                  # --cache-max-size when the command line gives none ("15%": of the disk)
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

from assembler.cache.prune import default_budget, parse_budget
from assembler.errors import InputError
from assembler.hostdisk import Quota, user_quota
from assembler.proc import Runner
from assembler.trace import housekeeping

KEYS = ("cache-trust", "cache-max-size")


@dataclass(frozen=True)
class UserConfig:
    """What the config file says (nothing when there is none)."""

    path: Path | None = None
    cache_trust: tuple[Path, ...] = ()
    cache_max_size: str | None = None  # as written: a size, or a share of the cache's disk ("10%")


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
    max_size = data.get("cache-max-size")
    if max_size is not None and not (isinstance(max_size, str) and max_size.strip()):
        raise InputError(f'{path}: cache-max-size must be a size or a share of the disk, e.g. "50G" or "10%"')
    return UserConfig(path, tuple(path.parent / Path(t).expanduser() for t in trust), max_size)


def cache_budget(arg: str | None, cache_dir: Path) -> int:
    """The cache's size budget in bytes: ``--cache-max-size``, else the config file's
    ``cache-max-size``, else the default: 10% of the cache's disk, at most 100 GiB, and at
    most half of this user's quota there (:func:`default_quota`: on Lustre a tenth of a
    petabyte filesystem is no budget, the quota is). InputError when the one
    given is not a size or a share."""
    if arg is not None:
        return parse_budget(arg, cache_dir, what="--cache-max-size")
    config = read_config()
    if config.cache_max_size is not None:
        return parse_budget(config.cache_max_size, cache_dir, what=f"cache-max-size of {config.path}")
    budget = default_budget(cache_dir)
    quota = default_quota(cache_dir)
    return min(budget, quota.limit // 2) if quota is not None else budget


def default_quota(cache_dir: Path) -> Quota | None:
    """This user's quota on the network filesystem the cache is on (:func:`user_quota`).
    No input of a build (the mount table it reads changes as any container starts): it is
    housekeeping, so an up-to-date build is still answered from its record."""
    with housekeeping():
        return user_quota(cache_dir, Runner())
