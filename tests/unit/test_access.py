"""Access files: schema, exclusive 0400 creation, partial files, and hostile input."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hqshm.link.access import (
    AccessLoadError,
    AccessRecord,
    AccessStoreError,
    Endpoint,
    VersionMismatchError,
    check_version,
    generate,
    read_access_file,
    secret_bytes,
    write_access_file,
)

KEY = "ab" * 32


def _record(**overrides: Any) -> AccessRecord:
    fields: dict[str, Any] = {
        "client_host": "login1",
        "client_port": 6789,
        "worker_host": "login1-ib",
        "worker_port": 1234,
    }
    fields.update(overrides)
    return generate("0.27.0", **fields)


def _write_json(path: Path, document: Any, mode: int = 0o400) -> Path:
    path.write_text(json.dumps(document))
    path.chmod(mode)
    return path


def _valid_document() -> dict[str, Any]:
    return {
        "version": "0.27.0",
        "server_uid": "aB3dE9",
        "client": {"host": "h", "port": 6789, "secret_key": KEY},
        "worker": {"host": "h", "port": 1234, "secret_key": None},
    }


# --- generate --------------------------------------------------------------------------------


def test_generate_makes_fresh_secrets_and_uid() -> None:
    first, second = _record(), _record()
    assert first.client is not None and first.worker is not None
    assert first.client.secret_key != first.worker.secret_key
    assert first.client.secret_key != second.client.secret_key  # type: ignore[union-attr]
    assert first.server_uid is not None and len(first.server_uid) == 6
    assert first.server_uid.isascii() and first.server_uid.isalnum()
    assert secret_bytes(first.client) == bytes.fromhex(first.client.secret_key or "")
    assert len(secret_bytes(first.client) or b"") == 32


def test_generate_without_secrets_and_with_a_given_uid() -> None:
    record = _record(client_secret=False, worker_secret=False, server_uid="ABC123")
    assert record.server_uid == "ABC123"
    assert record.client is not None and record.client.secret_key is None
    assert record.worker is not None and secret_bytes(record.worker) is None


def test_repr_hides_secret_keys() -> None:
    record = _record()
    assert record.client is not None and record.client.secret_key is not None
    text = repr(record)
    assert record.client.secret_key not in text
    assert "secret_key=<hidden>" in text and "port=6789" in text


@pytest.mark.parametrize(
    ("host", "port", "key", "message"),
    [
        ("", 1, None, "host"),
        ("h\nWARNING fake log line", 1, None, "host"),
        ("\ud800", 1, None, "host"),
        ("h", 0, None, "1..65535"),
        ("h", 65536, None, "1..65535"),
        ("h", True, None, "integer"),
        ("h", 1, "zz" * 32, "hexadecimal"),
        ("h", 1, "ab" * 31, "hexadecimal"),
    ],
)
def test_endpoint_validates_when_built(host: str, port: int, key: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Endpoint(host, port, key)


# --- write -----------------------------------------------------------------------------------


def test_full_file_has_exactly_the_schema_and_mode_0400(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = _record()
    path = tmp_path / "access.json"
    with caplog.at_level(logging.INFO, logger="hqshm.link.access"):
        write_access_file(path, record)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    document = json.loads(path.read_text())
    assert list(document) == ["version", "server_uid", "client", "worker"]
    for name in ("client", "worker"):
        assert list(document[name]) == ["host", "port", "secret_key"]
        assert type(document[name]["port"]) is int
        assert type(document[name]["secret_key"]) is str
    assert document["client"]["host"] == "login1" and document["worker"]["port"] == 1234
    assert f"Storing access file as '{path}'" in caplog.text
    assert record.client is not None and record.client.secret_key not in caplog.text  # type: ignore[operator]
    assert read_access_file(path) == record


def test_written_text_is_serde_pretty_json(tmp_path: Path) -> None:
    record = AccessRecord("0.27.0", "ABC123", Endpoint("h", 1, None), Endpoint("w", 2, KEY))
    path = tmp_path / "access.json"
    write_access_file(path, record)
    assert path.read_text() == (
        "{\n"
        '  "version": "0.27.0",\n'
        '  "server_uid": "ABC123",\n'
        '  "client": {\n    "host": "h",\n    "port": 1,\n    "secret_key": null\n  },\n'
        f'  "worker": {{\n    "host": "w",\n    "port": 2,\n    "secret_key": "{KEY}"\n  }}\n'
        "}"
    )


@pytest.mark.parametrize("part", ["client", "worker"])
def test_partial_files_hold_version_and_one_endpoint(tmp_path: Path, part: str) -> None:
    record = _record()
    path = tmp_path / f"{part}.json"
    write_access_file(path, record, part=part)  # type: ignore[arg-type]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    document = json.loads(path.read_text())
    assert list(document) == ["version", part]
    loaded = read_access_file(path)
    assert loaded.server_uid is None
    assert getattr(loaded, part) == getattr(record, part)
    assert getattr(loaded, "worker" if part == "client" else "client") is None


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text("keep me")
    with pytest.raises(AccessStoreError) as caught:
        write_access_file(path, _record())
    assert str(caught.value) == f"Cannot store access file '{path}': file exists"
    assert path.read_text() == "keep me"


def test_refuses_to_write_through_a_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(AccessStoreError, match="file exists"):
        write_access_file(path, _record())
    assert not (tmp_path / "elsewhere.json").exists()


def test_store_error_names_the_os_reason(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "access.json"
    with pytest.raises(AccessStoreError) as caught:
        write_access_file(path, _record())
    assert str(caught.value) == f"Cannot store access file '{path}': No such file or directory"


def test_mode_is_0400_even_under_a_hostile_umask(tmp_path: Path) -> None:
    old = os.umask(0o777)
    try:
        write_access_file(tmp_path / "a.json", _record())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o400


def test_partial_record_cannot_be_written_as_full(tmp_path: Path) -> None:
    record = AccessRecord("1", None, Endpoint("h", 1, None), None)
    with pytest.raises(ValueError, match="full access file"):
        write_access_file(tmp_path / "a.json", record)
    with pytest.raises(ValueError, match="no worker endpoint"):
        write_access_file(tmp_path / "a.json", record, part="worker")
    assert not (tmp_path / "a.json").exists()


# --- read ------------------------------------------------------------------------------------


def test_reads_a_valid_file(tmp_path: Path) -> None:
    record = read_access_file(_write_json(tmp_path / "a.json", _valid_document()))
    assert record == AccessRecord(
        "0.27.0", "aB3dE9", Endpoint("h", 6789, KEY), Endpoint("h", 1234, None)
    )


def _broken(change: Any) -> dict[str, Any]:
    document = _valid_document()
    change(document)
    return document


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "the top level must be a JSON object"),
        ("text", "the top level must be a JSON object"),
        (_broken(lambda d: d.pop("version")), "missing key 'version'"),
        (_broken(lambda d: d.pop("server_uid")), "missing key 'server_uid'"),
        (_broken(lambda d: d["client"].pop("port")), "missing key 'port' in 'client'"),
        (_broken(lambda d: d["worker"].pop("secret_key")), "missing key 'secret_key' in 'worker'"),
        (_broken(lambda d: d.update(extra=1)), "unknown key 'extra'"),
        (_broken(lambda d: d["client"].update(token="x")), "unknown key 'token' in 'client'"),
        (_broken(lambda d: d.update(version=27)), "'version' must be a non-empty string"),
        (_broken(lambda d: d.update(version="1\x1b[2J")), "'version' must be a non-empty string"),
        (_broken(lambda d: d.update(server_uid="abc")), "'server_uid' must be 6 ASCII"),
        (_broken(lambda d: d.update(server_uid="abc-12")), "'server_uid' must be 6 ASCII"),
        (_broken(lambda d: d.update(server_uid=None)), "'server_uid' must be a string"),
        (_broken(lambda d: d.update(client="h:1")), "'client' must be a JSON object"),
        (_broken(lambda d: d["client"].update(port="6789")), "client: 'port' must be an integer"),
        (_broken(lambda d: d["client"].update(port=67.0)), "client: 'port' must be an integer"),
        (_broken(lambda d: d["client"].update(port=True)), "client: 'port' must be an integer"),
        (_broken(lambda d: d["worker"].update(port=0)), "worker: 'port' must be in 1..65535"),
        (_broken(lambda d: d["worker"].update(port=70000)), "worker: 'port' must be in 1..65535"),
        (_broken(lambda d: d["client"].update(host=None)), "client: 'host' must be a non-empty"),
        (_broken(lambda d: d["client"].update(secret_key="xy" * 32)), "client: 'secret_key'"),
        (_broken(lambda d: d["client"].update(secret_key="ab" * 33)), "client: 'secret_key'"),
        (_broken(lambda d: d["client"].update(secret_key=12)), "client: 'secret_key'"),
        ({"version": "1"}, "neither a 'client' nor a 'worker'"),
    ],
)
def test_hostile_files_are_refused_with_the_reason(
    tmp_path: Path, document: Any, reason: str
) -> None:
    path = _write_json(tmp_path / "a.json", document)
    with pytest.raises(AccessLoadError) as caught:
        read_access_file(path)
    assert str(caught.value).startswith(f"Cannot load access record from {path}: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"version": "1", "version": "2"}', "duplicate key 'version'"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (
            b'{"version": "1", "client": {"host": "h", "port": 1' + b"0" * 5000 + b"}}",
            "number is too long",
        ),
    ],
    ids=["syntax", "empty", "duplicate", "binary", "deep", "huge-int"],
)
def test_malformed_bytes_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(content)
    with pytest.raises(AccessLoadError, match=reason):
        read_access_file(path)


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    with open(path, "wb") as file:
        file.truncate(64 << 20)  # sparse: 64 MiB of zeros
    with pytest.raises(AccessLoadError, match="larger than 1 MiB"):
        read_access_file(path)


def test_missing_file_names_the_os_reason(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(AccessLoadError) as caught:
        read_access_file(path)
    assert str(caught.value) == f"Cannot load access record from {path}: No such file or directory"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    os.mkfifo(path)
    with pytest.raises(AccessLoadError, match="not a regular file"):
        read_access_file(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessLoadError):
        read_access_file(tmp_path)


def test_file_readable_by_others_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_json(tmp_path / "a.json", _valid_document(), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="hqshm.link.access"):
        record = read_access_file(path)
    assert record.server_uid == "aB3dE9"
    assert "644" in caplog.text and str(path) in caplog.text
    assert KEY not in caplog.text


def test_private_file_loads_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_json(tmp_path / "a.json", _valid_document(), mode=0o600)
    with caplog.at_level(logging.WARNING, logger="hqshm.link.access"):
        read_access_file(path)
    assert caplog.records == []


def test_partial_file_may_carry_a_server_uid(tmp_path: Path) -> None:
    document = _valid_document()
    del document["worker"]
    assert read_access_file(_write_json(tmp_path / "a.json", document)).server_uid == "aB3dE9"


# --- version ---------------------------------------------------------------------------------


def test_version_mismatch_names_both_versions() -> None:
    record = AccessRecord("0.27.0.1", None, Endpoint("h", 1, None), None)
    with pytest.raises(VersionMismatchError) as caught:
        check_version(record, "0.27.0")
    assert str(caught.value) == (
        "Hyperqueue version mismatch detected.\n"
        "Access record contains version 0.27.0.1, but the current version is 0.27.0."
    )
    check_version(record, "0.27.0.1")


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    path = tmp_path / "access.json"
    with pytest.raises(AccessStoreError, match="No space left on device"):
        write_access_file(path, _record())
    assert not path.exists()
