"""registries.conf read and applied as containers-registries.conf(5) says: which table a
name falls under, where a pull reads from, short names, and which files count.

No registry here (tests/test_mirrors.py pulls through mirrors of the real one): the
files are written to the test's folder, /etc/containers included (``system=``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from assembler.errors import InputError
from assembler.oci.reference import ImageName
from assembler.registry.conf import RegistriesConf, match_length
from assembler.registry.conffiles import config_files, load
from assembler.registry.http import RegistryClient
from assembler.registry.types import RegistryOptions


def conf(text: str, tmp_path: Path) -> RegistriesConf:
    path = tmp_path / "registries.conf"
    path.write_text(textwrap.dedent(text))
    return load(path, environ={"HOME": str(tmp_path / "home")}, system=tmp_path / "etc")


def sources(c: RegistriesConf, name: str) -> list[str]:
    return [str(s) for s in c.pull_sources(ImageName.parse(name))]


MAN_PAGE = """\
    unqualified-search-registries = ["example.com"]

    [[registry]]
    prefix = "example.com/foo"
    insecure = false
    blocked = false
    location = "internal-registry-for-example.com/bar"

    [[registry.mirror]]
    location = "example-mirror-0.local/mirror-for-foo"

    [[registry.mirror]]
    location = "example-mirror-1.local/mirrors/foo"
    insecure = true

    [[registry]]
    location = "registry.com"

    [[registry.mirror]]
    location = "mirror.registry.com"
"""


def test_the_man_page_example(tmp_path: Path) -> None:
    c = conf(MAN_PAGE, tmp_path)
    assert sources(c, "example.com/foo/image:latest") == [
        "mirror example-mirror-0.local/mirror-for-foo/image:latest",
        "mirror example-mirror-1.local/mirrors/foo/image:latest",
        "internal-registry-for-example.com/bar/image:latest",
    ]
    assert [s.insecure for s in c.pull_sources(ImageName.parse("example.com/foo/image"))] == [False, True, False]
    # a mirror belongs to its table only
    assert sources(c, "registry.com/image:latest") == [
        "mirror mirror.registry.com/image:latest",
        "registry.com/image:latest",
    ]
    assert sources(c, "example.com/other:1") == ["example.com/other:1"]  # no table: the name itself


def test_the_longest_prefix_wins_and_ends_at_a_separator(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        prefix = "docker.io"
        location = "hub.example.com"
        [[registry]]
        prefix = "docker.io/library/x"
        location = "x.example.com/only-x"
        """,
        tmp_path,
    )
    assert sources(c, "docker.io/library/x:tag") == ["x.example.com/only-x:tag"]
    assert sources(c, "docker.io/library/xy:tag") == ["hub.example.com/library/xy:tag"]
    assert sources(c, "docker.io/library/x@sha256:" + "a" * 64) == ["x.example.com/only-x@sha256:" + "a" * 64]
    assert match_length("example.community/a", "example.com") == -1
    assert match_length("example.com:5000/a", "example.com") == len("example.com")  # as containers/image does


def test_a_wildcard_prefix_matches_subdomains_and_keeps_the_name(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        prefix = "*.example.com"
        [[registry.mirror]]
        location = "mirror.local/cache"
        """,
        tmp_path,
    )
    assert sources(c, "a.b.example.com/team/app:1") == [
        "mirror mirror.local/cache/team/app:1",
        "a.b.example.com/team/app:1",
    ]
    assert sources(c, "example.com/team/app:1") == ["example.com/team/app:1"]
    assert sources(c, "evil.org/a.example.com:1") == ["evil.org/a.example.com:1"]


def test_docker_hub_is_matched_by_its_normalised_name(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        prefix = "docker.io"
        location = "docker.io"
        [[registry.mirror]]
        location = "127.0.0.1:5000"
        insecure = true
        """,
        tmp_path,
    )
    assert sources(c, "docker.io/library/x:tag") == ["mirror 127.0.0.1:5000/library/x:tag", "docker.io/library/x:tag"]
    assert sources(c, "ubuntu:24.04") == [
        "mirror 127.0.0.1:5000/library/ubuntu:24.04",
        "docker.io/library/ubuntu:24.04",
    ]
    # the mirror's insecure is its own, for pulls through it: not its host's, nor docker.io's
    assert [s.insecure for s in c.pull_sources(ImageName.parse("x"))] == [True, False]
    assert not c.insecure("127.0.0.1:5000") and not c.insecure("docker.io")


def test_mirrors_by_digest_only_and_pull_from_mirror(tmp_path: Path) -> None:
    digest = "@sha256:" + "b" * 64
    c = conf(
        """\
        [[registry]]
        location = "by-digest.example.com"
        mirror-by-digest-only = true
        [[registry.mirror]]
        location = "m.local"
        [[registry]]
        location = "each.example.com"
        [[registry.mirror]]
        location = "digests.local"
        pull-from-mirror = "digest-only"
        [[registry.mirror]]
        location = "tags.local"
        pull-from-mirror = "tag-only"
        """,
        tmp_path,
    )
    assert sources(c, "by-digest.example.com/app:1") == ["by-digest.example.com/app:1"]  # a tag pull skips it
    assert sources(c, "by-digest.example.com/app" + digest) == [
        f"mirror m.local/app{digest}",
        f"by-digest.example.com/app{digest}",
    ]
    assert sources(c, "each.example.com/app:1") == ["mirror tags.local/app:1", "each.example.com/app:1"]
    assert sources(c, "each.example.com/app" + digest) == [
        f"mirror digests.local/app{digest}",
        f"each.example.com/app{digest}",
    ]


def test_a_blocked_registry_refuses_pulls_but_not_a_longer_prefix(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        location = "blocked.example.com"
        blocked = true
        [[registry]]
        location = "blocked.example.com/allowed"
        """,
        tmp_path,
    )
    with pytest.raises(
        InputError, match=r"docker://blocked.example.com/app:1: pulls from this registry are blocked"
    ) as e:
        sources(c, "blocked.example.com/app:1")
    assert str(tmp_path / "registries.conf") in str(e.value)
    assert sources(c, "blocked.example.com/allowed/app:1") == ["blocked.example.com/allowed/app:1"]


def test_short_names_aliases_then_search_registries_then_docker_hub(tmp_path: Path) -> None:
    c = conf(
        """\
        unqualified-search-registries = ["quay.io", "docker.io"]
        [aliases]
        "app" = "registry.example.com/team/app"
        """,
        tmp_path,
    )
    assert sources(c, "app:2") == ["registry.example.com/team/app:2"]
    assert sources(c, "nvidia/cuda:12") == ["quay.io/nvidia/cuda:12", "docker.io/nvidia/cuda:12"]
    assert sources(c, "ubuntu") == ["quay.io/ubuntu:latest", "docker.io/library/ubuntu:latest"]
    assert sources(c, "docker.io/ubuntu:1") == ["docker.io/library/ubuntu:1"]  # not a short name
    assert sources(RegistriesConf(), "ubuntu:1") == ["docker.io/library/ubuntu:1"]  # no registries.conf: as before


def test_the_short_name_is_kept_and_takes_no_part_in_comparisons() -> None:
    assert [ImageName.parse(n).short for n in ("ubuntu:1", "nvidia/cuda", "docker.io/ubuntu", "localhost/x")] == [
        "ubuntu",
        "nvidia/cuda",
        "",
        "",
    ]
    assert ImageName.parse("ubuntu:1") == ImageName.parse("docker.io/library/ubuntu:1")
    assert ImageName.parse("ubuntu:1").with_reference("2").short == "ubuntu"


def test_drop_ins_replace_tables_search_and_aliases(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "registries.conf.d").mkdir(parents=True)
    (etc / "registries.conf").write_text(
        'unqualified-search-registries = ["one.example.com"]\n'
        '[[registry]]\nlocation = "a.example.com"\n[[registry.mirror]]\nlocation = "old.local"\n'
        '[aliases]\n"gone" = "a.example.com/gone"\n"kept" = "a.example.com/kept"\n'
    )
    (etc / "registries.conf.d" / "20-b.conf").write_text('unqualified-search-registries = ["two.example.com"]\n')
    (etc / "registries.conf.d" / "10-a.conf").write_text(
        '[[registry]]\nlocation = "a.example.com"\n[[registry.mirror]]\nlocation = "new.local"\n'
        '[aliases]\n"gone" = ""\n'
    )
    (etc / "registries.conf.d" / "ignored.txt").write_text("not toml [")
    home = tmp_path / "home"
    (home / ".config/containers/registries.conf.d").mkdir(parents=True)
    (home / ".config/containers/registries.conf.d/x.conf").write_text(
        'unqualified-search-registries = ["user.example.com"]\n'
    )
    c = load(environ={"HOME": str(home)}, system=etc)
    assert c.files == (
        str(etc / "registries.conf"),
        str(etc / "registries.conf.d/10-a.conf"),
        str(etc / "registries.conf.d/20-b.conf"),
        str(home / ".config/containers/registries.conf.d/x.conf"),
    )
    assert sources(c, "a.example.com/app:1") == ["mirror new.local/app:1", "a.example.com/app:1"]
    assert c.search == ("user.example.com",)
    assert dict(c.aliases) == {"kept": "a.example.com/kept"}


def test_which_files(tmp_path: Path) -> None:
    etc, home = tmp_path / "etc", tmp_path / "home"
    user = home / ".config/containers"
    env = {"HOME": str(home)}
    assert config_files(None, env, system=etc) == (
        etc / "registries.conf",
        False,
        [etc / "registries.conf.d", user / "registries.conf.d"],
    )
    user.mkdir(parents=True)
    (user / "registries.conf").write_text("")
    assert config_files(None, env, system=etc) == (user / "registries.conf", False, [user / "registries.conf.d"])
    xdg = {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert config_files(None, xdg, system=etc)[0] == etc / "registries.conf"
    chosen = {**env, "CONTAINERS_REGISTRIES_CONF": str(tmp_path / "env.conf")}
    assert config_files(None, chosen, system=etc) == (
        tmp_path / "env.conf",
        True,
        [etc / "registries.conf.d", user / "registries.conf.d"],
    )
    assert config_files(tmp_path / "flag.conf", chosen, system=etc)[0] == tmp_path / "flag.conf"
    assert load(environ=env, system=etc) == RegistriesConf(files=(str(user / "registries.conf"),))
    with pytest.raises(InputError, match=r"flag\.conf: cannot read registries\.conf"):
        load(tmp_path / "flag.conf", environ=env, system=etc)


def test_version_1_is_converted(tmp_path: Path) -> None:
    c = conf(
        """\
        [registries.search]
        registries = ["quay.io"]
        [registries.insecure]
        registries = ["plain.example.com:5000"]
        [registries.block]
        registries = ["bad.example.com"]
        """,
        tmp_path,
    )
    assert c.search == ("quay.io",)
    assert c.insecure("plain.example.com:5000") and not c.insecure("quay.io")
    with pytest.raises(InputError, match="blocked"):
        sources(c, "bad.example.com/x:1")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[registry]\n", "not a TOML file"),
        ('[[registry]]\nlocation = "https://x.example.com"\n', "names no scheme"),
        ('[[registry]]\nprefix = "x.example.com"\n', "has no location"),
        ("[[registry]]\ninsecure = true\n", "sets neither prefix nor location"),
        ('[[registry]]\nprefix = "*.example.com/ns"\n', "a wildcard prefix is"),
        ('[[registry]]\nprefix = "*.example.com:5000"\n', "a wildcard prefix is"),
        ('[[registry]]\nprefix = "example.*.com"\nlocation = "x.example.com"\n', "a wildcard prefix is"),
        ('[[registry]]\nprefix = "*example.com"\nlocation = "x.example.com"\n', "a wildcard prefix is"),
        ('[[registry]]\nprefix = "*.*.example.com"\n', "a wildcard prefix is"),
        # containers/image matches names that start with a host: such a table would block nothing
        ('[[registry]]\nprefix = "busybox"\nlocation = "quay.io/busybox"\nblocked = true\n', "registry host"),
        ('[[registry]]\nlocation = "myregistry/ns"\n', "does not start with a registry host"),
        ('[[registry]]\nlocation = "x.example.com"\ninsecure = "yes"\n', "insecure must be true or false"),
        (
            '[[registry]]\nlocation = "x.example.com"\n[[registry.mirror]]\npull-from-mirror = "all"\n',
            "has no location",
        ),
        (
            '[[registry]]\nlocation = "x.example.com"\n[[registry.mirror]]\nlocation = "m.local"\n'
            'pull-from-mirror = "x"\n',
            "pull-from-mirror is one of",
        ),
        ('unqualified-search-registries = ["quay.io/ns"]\n', "HOST\\[:PORT\\] names"),
        ('[aliases]\n"x" = "quay.io/x:1"\n', "not a HOST/REPO name without a tag"),
        ('[registries.search]\nregistries = ["a.io"]\n[[registry]]\nlocation = "b.io"\n', "mixes the version 1"),
    ],
)
def test_mistakes_name_the_file(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(InputError, match=error) as e:
        conf(text, tmp_path)
    assert str(e.value).startswith(str(tmp_path / "registries.conf"))


def test_a_drop_in_must_be_version_2(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "registries.conf.d").mkdir(parents=True)
    (etc / "registries.conf.d/old.conf").write_text('[registries.search]\nregistries = ["a.io"]\n')
    with pytest.raises(InputError, match=r"old\.conf: a drop-in must be in the version 2 format"):
        load(environ={"HOME": str(tmp_path)}, system=etc)


# -- Docker Hub's names, insecure endpoints, prefix edge cases (issue 32) ----------------------

DIGEST = "sha256:" + "c" * 64
# Every way of naming Docker Hub's library/x that reaches Docker Hub.
HUB_X = (
    "x",
    "x:1",
    "library/x",
    f"x@{DIGEST}",
    "docker.io/x",
    "docker.io/library/x:1",
    "index.docker.io/x",
    "index.docker.io/library/x:1",
    "registry-1.docker.io/x",
    f"registry-1.docker.io/library/x@{DIGEST}",
    "DOCKER.IO/library/x",
    "Index.Docker.IO/x",
    "docker.io./x",
    "registry-1.docker.io.:443/library/x",
    "index.docker.io:443/x",
    "docker.io:443/library/x",
    "registry-1.docker.io:0443/x",
)
HUB_PREFIXES = ("docker.io", "index.docker.io", "registry-1.docker.io", "INDEX.DOCKER.IO", "registry-1.docker.io:443")


def blocked(c: RegistriesConf, name: str) -> bool:
    try:
        c.pull_sources(ImageName.parse(name))
    except InputError as e:
        assert "pulls from this registry are blocked" in str(e)
        return True
    return False


@pytest.mark.parametrize("prefix", HUB_PREFIXES)
def test_a_blocked_docker_hub_is_blocked_under_each_of_its_names(tmp_path: Path, prefix: str) -> None:
    c = conf(f'[[registry]]\nlocation = "{prefix}"\nblocked = true\n', tmp_path)
    assert [n for n in HUB_X if not blocked(c, n)] == []
    assert blocked(c, "docker.io:5000/x")  # a port after the prefix, as containers/image matches it
    # Not Docker Hub: other hosts, and Docker Hub's names on another port.
    others = ("quay.io/x", "notdocker.io/x", "docker.io.example.com/x", "index.docker.io:5000/x", "hub.docker.io/x")
    assert [n for n in others if blocked(c, n)] == []


@pytest.mark.parametrize("host", HUB_PREFIXES)
def test_a_blocked_docker_hub_repository_is_blocked_under_each_of_its_names(tmp_path: Path, host: str) -> None:
    c = conf(f'[[registry]]\nlocation = "{host}/library/x"\nblocked = true\n', tmp_path)
    assert [n for n in HUB_X if not blocked(c, n)] == []
    others = ("xy", "x2/x", "team/x", "docker.io/library/xy:1", "index.docker.io/team/x", "quay.io/library/x")
    assert [n for n in others if blocked(c, n)] == []


def test_docker_hub_names_are_pulled_as_containers_image_normalises_them(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        prefix = "registry-1.docker.io"
        location = "docker.io"
        [[registry.mirror]]
        location = "mirror.local"
        """,
        tmp_path,
    )
    expected = ["mirror mirror.local/library/x:1", "docker.io/library/x:1"]
    for name in ("x:1", "index.docker.io/x:1", "registry-1.docker.io/library/x:1", "Docker.IO./x:1"):
        assert sources(c, name) == expected, name
    assert sources(RegistriesConf(), "index.docker.io/x:1") == ["docker.io/library/x:1"]  # no table: normalised too


def test_a_location_or_mirror_on_a_blocked_registry_is_not_read(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        prefix = "docker.io"
        location = "docker.io"
        blocked = true
        [[registry]]
        prefix = "hub.example.com"
        location = "index.docker.io/library"
        [[registry]]
        location = "quay.io"
        [[registry.mirror]]
        location = "registry-1.docker.io/quay"
        [[registry.mirror]]
        location = "mirror.local"
        """,
        tmp_path,
    )
    assert blocked(c, "hub.example.com/x:1"), "its location is Docker Hub"
    assert sources(c, "quay.io/team/x:1") == ["mirror mirror.local/team/x:1", "quay.io/team/x:1"]


def test_a_wildcard_prefix_edges(tmp_path: Path) -> None:
    c = conf('[[registry]]\nprefix = "*.Example.com."\nblocked = true\n', tmp_path)
    assert [blocked(c, n) for n in ("a.example.com/x", "a.b.EXAMPLE.com:5000/x", "a.example.com./x")] == [True] * 3
    others = ("example.com/x", "aexample.com/x", "a.example.com.evil.org/x", "evil.org/a.example.com/x")
    assert [n for n in others if blocked(c, n)] == []
    # Docker Hub's other names are subdomains of docker.io: *.docker.io covers Docker Hub.
    c = conf('[[registry]]\nprefix = "*.docker.io"\nblocked = true\n', tmp_path)
    assert [n for n in HUB_X if not blocked(c, n)] == []
    assert not blocked(c, "quay.io/x")


def test_prefix_edges(tmp_path: Path) -> None:
    c = conf(
        f"""\
        [[registry]]
        location = "Example.COM:5000"
        blocked = true
        [[registry]]
        location = "tags.example.com/app:1"
        blocked = true
        [[registry]]
        location = "digests.example.com/app@{DIGEST}"
        blocked = true
        [[registry]]
        location = "ns.example.com/team/"
        blocked = true
        [[registry]]
        location = "tls.example.com/team"
        blocked = true
        """,
        tmp_path,
    )
    assert [n for n in ("example.com:5000/x", "EXAMPLE.com:05000/a/b:1") if not blocked(c, n)] == []
    assert [n for n in ("example.com/x", "example.com:50001/x") if blocked(c, n)] == []
    assert blocked(c, "tags.example.com/app:1") and not blocked(c, "tags.example.com/app:10")
    assert not blocked(c, "tags.example.com/app:2") and not blocked(c, "tags.example.com/app1:1")
    assert blocked(c, f"digests.example.com/app@{DIGEST}") and not blocked(c, "digests.example.com/app:1")
    assert blocked(c, "ns.example.com/team/x:1") and not blocked(c, "ns.example.com/teams/x:1")
    assert blocked(c, "tls.example.com:443/team/x") and blocked(c, "TLS.example.com.:00443/team/x")  # HTTPS's port


def test_insecure_is_the_endpoint_s_own(tmp_path: Path) -> None:
    c = conf(
        """\
        [[registry]]
        location = "registry.example.com"
        [[registry.mirror]]
        location = "mirror.local:5000"
        insecure = true
        [[registry]]
        location = "plain.local:5000"
        insecure = true
        [[registry.mirror]]
        location = "tls-mirror.local"
        """,
        tmp_path,
    )
    assert [s.insecure for s in c.pull_sources(ImageName.parse("registry.example.com/x:1"))] == [True, False]
    assert [s.insecure for s in c.pull_sources(ImageName.parse("plain.local:5000/x:1"))] == [False, True]
    # Pushes and every other request to a host: only the host's own table counts.
    scheme = {
        h: RegistryClient(h, options=RegistryOptions(conf=c)).base for h in ("mirror.local:5000", "plain.local:5000")
    }
    assert scheme == {"mirror.local:5000": "https://mirror.local:5000", "plain.local:5000": "http://plain.local:5000"}
    assert RegistryClient("mirror.local:5000", options=RegistryOptions(tls_verify=False, conf=c)).base.startswith(
        "http:"
    )
    assert not c.insecure("tls-mirror.local") and not c.insecure("registry.example.com")


def test_one_registry_spelled_twice_with_other_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"#2: 'docker.io' is also \[\[registry\]\] 'docker.io'"):
        conf(
            '[[registry]]\nlocation = "docker.io"\nblocked = true\n[[registry]]\nprefix = "hub.example.com"\n'
            'location = "registry-1.docker.io"\n',
            tmp_path,
        )
    with pytest.raises(InputError, match=r"#2: 'docker.io' is also \[\[registry\]\] 'docker.io'"):
        conf(
            '[[registry]]\nlocation = "docker.io"\n[[registry]]\nlocation = "index.docker.io"\nblocked = true\n',
            tmp_path,
        )
    c = conf(
        """\
        [registries.block]
        registries = ["index.docker.io"]
        [registries.insecure]
        registries = ["docker.io"]
        """,
        tmp_path,
    )
    assert blocked(c, "x") and c.insecure("registry-1.docker.io")


def test_a_drop_in_replaces_the_table_of_the_same_registry_however_spelled(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "registries.conf.d").mkdir(parents=True)
    (etc / "registries.conf").write_text('[[registry]]\nlocation = "docker.io"\n')
    (etc / "registries.conf.d/block.conf").write_text('[[registry]]\nlocation = "index.docker.io"\nblocked = true\n')
    assert blocked(load(environ={"HOME": str(tmp_path)}, system=etc), "x")
