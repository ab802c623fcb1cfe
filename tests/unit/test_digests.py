"""cluster/digests.py: hashlib's and hmac's results without loading OpenSSL, which costs every
process of the runtime 3.5 MB (issue 9, item 4)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

from hqshm.cluster.digests import blake2b_128, hmac_sha256, same_secret, sha256, token_hex


def test_the_digests_are_hashlibs() -> None:
    for data in (b"", b"x", bytes(range(256)) * 9):
        assert blake2b_128(data) == hashlib.blake2b(data, digest_size=16).digest()
        assert sha256(data).digest() == hashlib.sha256(data).digest()
        assert hmac_sha256(data, b"m") == hmac.new(data, b"m", hashlib.sha256).digest()


def test_secrets_compare_and_tokens() -> None:
    assert same_secret(b"abc", b"abc") and not same_secret(b"abc", b"abd")
    assert same_secret("tok", "tok") and not same_secret("tok", "to")
    first, second = token_hex(16), token_hex(16)
    assert len(first) == 32 and int(first, 16) >= 0 and first != second


def test_the_runtimes_processes_do_not_load_openssl() -> None:
    probe = ("import sys\n"
             "import hqshm.server.process, hqshm.cli.commands.server\n"
             "import hqshm.node.loop, hqshm.node.executor, hqshm.node.notify\n"
             "from hqshm.model.streamformat import new_node_key, stream_file_name\n"
             "stream_file_name(new_node_key(), 'uid')\n"
             "print(sorted({'_hashlib', 'hashlib', 'hmac', 'secrets', 'ssl'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_text_of_any_characters_compares_without_an_exception() -> None:
    """The constant-time comparison refuses non-ASCII text; a hostile token must only fail."""
    assert same_secret("é" * 4, "é" * 4)
    assert not same_secret("é" * 4, "e" * 4)
    assert not same_secret("tok\udcff", "tok")
