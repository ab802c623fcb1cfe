"""Access files: HQ's ``access.json`` schema (spec/deployment.md §2), read as hostile input.

An access file is a credential. It is created exclusively with mode 0400, never overwritten,
and never appears in a log or a ``repr``. Reading validates every key and type and bounds the
size, because the file may come from anywhere (users copy them between machines).
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any, Final, Literal

from hqshm.cluster.frozen import frozen
from hqshm.errors import UserError
from hqshm.link.commandlog import CommandLogger

if TYPE_CHECKING:
    from hqshm.link.serverdir import StrPath

logger = CommandLogger(__name__)

MAX_ACCESS_FILE_SIZE: Final = 1 << 20
_SECRET_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SERVER_UID = re.compile(r"[A-Za-z0-9]{6}")
_UID_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_MAX_TEXT: Final = 1024
_ENDPOINT_KEYS: Final = frozenset({"host", "port", "secret_key"})
_RECORD_KEYS: Final = frozenset({"version", "server_uid", "client", "worker"})

Part = Literal["full", "client", "worker"]


class AccessLoadError(UserError):  # spec/deployment.md §4 (worker start), cli.md §1
    template = "Cannot load access record from {path}: {reason}"


class AccessStoreError(UserError):  # spec/cli.md §3, hq server generate-access
    template = "Cannot store access file '{path}': {reason}"


class VersionMismatchError(UserError):  # spec/deployment.md §1
    template = (
        "Hyperqueue version mismatch detected.\n"
        "Access record contains version {file_version}, but the current version is {own_version}."
    )


@frozen
class Endpoint:
    """Where one kind of peer connects, and the secret it must hold (None: no authentication)."""

    host: str
    port: int
    secret_key: str | None

    def __post_init__(self) -> None:
        if not _is_text(self.host):
            raise ValueError("'host' must be a non-empty string of printable characters")
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise ValueError("'port' must be an integer")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"'port' must be in 1..65535, got {self.port}")
        if self.secret_key is not None and not (
            isinstance(self.secret_key, str) and _SECRET_HEX.fullmatch(self.secret_key)
        ):
            raise ValueError("'secret_key' must be 64 hexadecimal digits or null")

    def __repr__(self) -> str:
        secret = "None" if self.secret_key is None else "<hidden>"
        return f"Endpoint(host={self.host!r}, port={self.port}, secret_key={secret})"


@frozen
class AccessRecord:
    """The content of an access file; a partial file has one endpoint and no server UID."""

    version: str
    server_uid: str | None
    client: Endpoint | None
    worker: Endpoint | None

    def __post_init__(self) -> None:
        if not _is_text(self.version):
            raise ValueError("'version' must be a non-empty string of printable characters")
        if self.server_uid is not None and not (
            isinstance(self.server_uid, str) and _SERVER_UID.fullmatch(self.server_uid)
        ):
            raise ValueError("'server_uid' must be 6 ASCII letters or digits")
        if self.client is None and self.worker is None:
            raise ValueError("the record has neither a 'client' nor a 'worker' endpoint")


def _is_text(value: object) -> bool:
    # Hosts and versions end up in log lines and error texts: no control characters.
    return isinstance(value, str) and 0 < len(value) <= _MAX_TEXT and value.isprintable()


def generate(
    version: str,
    *,
    client_host: str,
    client_port: int,
    worker_host: str,
    worker_port: int,
    server_uid: str | None = None,
    client_secret: bool = True,
    worker_secret: bool = True,
) -> AccessRecord:
    """A fresh record; ``*_secret=False`` gives the endpoint no key (HQ's disable-... modes)."""
    if server_uid is None:
        # A name, not a secret: the small modulo bias does not matter.
        server_uid = "".join(_UID_ALPHABET[b % len(_UID_ALPHABET)] for b in os.urandom(6))
    return AccessRecord(
        version=version,
        server_uid=server_uid,
        client=Endpoint(client_host, client_port, _new_secret() if client_secret else None),
        worker=Endpoint(worker_host, worker_port, _new_secret() if worker_secret else None),
    )


def _new_secret() -> str:
    return os.urandom(32).hex()  # what secrets.token_bytes does, without its imports


def secret_bytes(endpoint: Endpoint) -> bytes | None:
    """The endpoint's 32-byte secret, or None when it has no authentication."""
    if endpoint.secret_key is None:
        return None
    if not _SECRET_HEX.fullmatch(endpoint.secret_key):
        raise ValueError("'secret_key' must be 64 hexadecimal digits")
    return bytes.fromhex(endpoint.secret_key)


def check_version(record: AccessRecord, own_version: str) -> None:
    if record.version != own_version:
        raise VersionMismatchError(file_version=record.version, own_version=own_version)


def write_access_file(path: StrPath, record: AccessRecord, *, part: Part = "full") -> None:
    """Create ``path`` exclusively, mode 0400, holding the whole record or one endpoint of it.

    The bytes are written straight to the exclusively created descriptor: a temporary file
    renamed into place could replace a file created meanwhile, which is what we must refuse.
    The output matches HQ's (serde pretty JSON: 2-space indent, no trailing newline).
    """
    text = json.dumps(_to_json(record, part), indent=2, ensure_ascii=False)
    logger.info("Storing access file as '%s'", path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    except FileExistsError:
        raise AccessStoreError(path=path, reason="file exists") from None
    except OSError as error:
        raise AccessStoreError(path=path, reason=_os_reason(error)) from None
    try:
        os.fchmod(fd, 0o400)  # the umask may have removed the owner's read bit
        with os.fdopen(fd, "w", encoding="utf-8", closefd=True) as file:
            fd = -1
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException as error:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)  # ours: created exclusively above; leave no half-written credential
        if isinstance(error, OSError):
            raise AccessStoreError(path=path, reason=_os_reason(error)) from None
        raise


def _to_json(record: AccessRecord, part: Part) -> dict[str, Any]:
    if part == "full":
        if record.client is None or record.worker is None or record.server_uid is None:
            raise ValueError("a full access file needs a server UID and both endpoints")
        return {
            "version": record.version,
            "server_uid": record.server_uid,
            "client": _endpoint_json(record.client),
            "worker": _endpoint_json(record.worker),
        }
    if part not in ("client", "worker"):
        raise ValueError(f"unknown access file part {part!r}")
    endpoint = record.client if part == "client" else record.worker
    if endpoint is None:
        raise ValueError(f"the record has no {part} endpoint")
    return {"version": record.version, part: _endpoint_json(endpoint)}


def _endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {"host": endpoint.host, "port": endpoint.port, "secret_key": endpoint.secret_key}


def read_access_file(path: StrPath) -> AccessRecord:
    """Load and validate an access file (full or partial)."""
    data = _read_bounded(path)
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError:
        raise AccessLoadError(path=path, reason="the file is not UTF-8 text") from None
    except RecursionError:
        raise AccessLoadError(path=path, reason="invalid JSON: nested too deeply") from None
    except (json.JSONDecodeError, _DuplicateKey) as error:
        raise AccessLoadError(path=path, reason=f"invalid JSON: {error}") from None
    except ValueError:  # Python's limit on the digits of an integer
        raise AccessLoadError(path=path, reason="invalid JSON: a number is too long") from None
    try:
        return _record_from_json(document)
    except ValueError as error:
        raise AccessLoadError(path=path, reason=str(error)) from None


def _read_bounded(path: StrPath) -> bytes:
    # O_NONBLOCK: opening a FIFO planted in place of the file must not hang the client.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise AccessLoadError(path=path, reason=_os_reason(error)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AccessLoadError(path=path, reason="not a regular file")
        if info.st_mode & 0o077:
            logger.warning(
                "Access file %s can be read by other users (mode %o); keep it private (0400)",
                path,
                stat.S_IMODE(info.st_mode),
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ACCESS_FILE_SIZE:
            chunk = os.read(fd, MAX_ACCESS_FILE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_ACCESS_FILE_SIZE:
            raise AccessLoadError(path=path, reason="the file is larger than 1 MiB")
        return b"".join(chunks)
    except OSError as error:
        raise AccessLoadError(path=path, reason=_os_reason(error)) from None
    finally:
        os.close(fd)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r}")
        result[key] = value
    return result


def _record_from_json(document: Any) -> AccessRecord:
    if not isinstance(document, dict):
        raise ValueError("the top level must be a JSON object")
    _check_keys(document, _RECORD_KEYS, required={"version"}, where="")
    client = _endpoint_from_json(document, "client")
    worker = _endpoint_from_json(document, "worker")
    if client is not None and worker is not None and "server_uid" not in document:
        raise ValueError("missing key 'server_uid'")
    if "server_uid" in document and not isinstance(document["server_uid"], str):
        raise ValueError("'server_uid' must be a string")
    return AccessRecord(
        version=document["version"],
        server_uid=document.get("server_uid"),
        client=client,
        worker=worker,
    )


def _endpoint_from_json(document: dict[str, Any], name: str) -> Endpoint | None:
    if name not in document:
        return None
    value = document[name]
    if not isinstance(value, dict):
        raise ValueError(f"'{name}' must be a JSON object")
    _check_keys(value, _ENDPOINT_KEYS, required=_ENDPOINT_KEYS, where=f" in '{name}'")
    try:
        return Endpoint(value["host"], value["port"], value["secret_key"])
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _check_keys(
    value: dict[str, Any],
    allowed: frozenset[str],
    *,
    required: set[str] | frozenset[str],
    where: str,
) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}{where}")
    missing = sorted(set(required) - set(value))
    if missing:
        raise ValueError(f"missing key {missing[0]!r}{where}")


def _os_reason(error: OSError) -> str:
    if error.errno is not None:
        return os.strerror(error.errno)
    return str(error)
