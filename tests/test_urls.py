"""URLs as they are written down (issue 66): without their userinfo, and without a query
string that names a credential; the same string when they have neither, so that a lock
written before keeps its keys. And the credentials a recorded URL is fetched with again:
the manifest's own URL of it, or those of its host's index."""

from __future__ import annotations

import pytest

from assembler.manifest.text.urls import redacted, scrubbed, with_credentials


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://alice:s3cret@pkgs.example/simple", "https://pkgs.example/simple"),
        ("https://TOKEN@pkgs.example:8443/simple/?page=2", "https://pkgs.example:8443/simple/?page=2"),
        # a presigned URL: the whole query string goes, the fragment stays
        (
            "https://b.s3.amazonaws.com/m.safetensors?X-Amz-Date=1&X-Amz-Signature=abc#part",
            "https://b.s3.amazonaws.com/m.safetensors#part",
        ),
        (
            "https://storage.googleapis.com/b/m.bin?X-Goog-Credential=x&X-Goog-Signature=y",
            "https://storage.googleapis.com/b/m.bin",
        ),
        (
            "https://a.blob.core.windows.net/c/m.bin?sv=2022-11-02&se=2030-01-01&sp=r&sig=zz",
            "https://a.blob.core.windows.net/c/m.bin",
        ),
        ("https://h.example/m.gguf?token=abc", "https://h.example/m.gguf"),
        ("https://h.example/m.gguf?api_key=abc", "https://h.example/m.gguf"),
        ("https://d1.cloudfront.net/m?Expires=1&Signature=s&Key-Pair-Id=k", "https://d1.cloudfront.net/m"),
        ("git+https://oauth2:glpat-x@gitlab.example/g/p.git@v1", "git+https://gitlab.example/g/p.git@v1"),
        ("ssh://git:pw@host.example/r.git", "ssh://host.example/r.git"),
        # nothing to take out: the very same string
        ("https://pypi.org/simple", "https://pypi.org/simple"),
        ("https://h.example/f.whl?download=true", "https://h.example/f.whl?download=true"),
        ("https://h.example/f.whl#sha256=00ff", "https://h.example/f.whl#sha256=00ff"),
        ("ssh://git@github.com/org/repo.git", "ssh://git@github.com/org/repo.git"),  # a login, not a secret
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("hf://gpt2@main", "hf://gpt2@main"),  # a revision, no userinfo
        ("docker://ubuntu@sha256:" + "a" * 64, "docker://ubuntu@sha256:" + "a" * 64),  # a digest, no userinfo
        ("models/tiny", "models/tiny"),
        ("http://[::1]:8080/simple", "http://[::1]:8080/simple"),
    ],
)
def test_a_url_is_recorded_without_credentials_or_signature(url: str, recorded: str) -> None:
    assert redacted(url) == recorded
    assert redacted(recorded) == recorded  # what is recorded is read back as it is


def test_every_url_in_a_text_is_redacted() -> None:
    said = scrubbed(
        "index https://u:p4ss@h.example/simple (refused); a @ https://h.example/a.whl?sig=s, 'http://x:y@c/d'"
    )
    assert said == "index https://h.example/simple (refused); a @ https://h.example/a.whl, 'http://c/d'"


def test_a_recorded_url_is_fetched_with_the_credentials_the_manifest_gives_its_host() -> None:
    index = "http://alice:s3cret@127.0.0.1:8000/simple"
    assert with_credentials("http://127.0.0.1:8000/simple", [index]) == index  # the lock's index: the manifest's
    assert with_credentials("http://h.example/simple", ["http://h.example/simple?token=t"]) == (
        "http://h.example/simple?token=t"
    )
    file = "http://127.0.0.1:8000/files/a-1.0-py3-none-any.whl"
    assert with_credentials(file, [index]) == "http://alice:s3cret@127.0.0.1:8000/files/a-1.0-py3-none-any.whl"
    for elsewhere in (
        "http://127.0.0.1:8001/files/a.whl",
        "https://127.0.0.1:8000/files/a.whl",
        "http://cdn.example/a",
    ):
        assert with_credentials(elsewhere, [index]) == elsewhere  # never to another host, port or scheme
