"""The agent's config file: TOML, readable by its owner only (it holds the device's token).

```toml
server = "https://pool.example.com/pool/"
device_id = "pi-kitchen"
token = "eyJ..."
# optional:
handlers = "/etc/taskpool-agent/handlers"
state_dir = "/var/lib/taskpool-agent"
```

While a device waits for approval the file holds its ``enrollment_secret``
instead of a token, so that ``enroll`` can be run again and resume waiting.
"""

from __future__ import annotations

import base64
import json
import os
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("~/.config/taskpool-agent/config.toml")


class ConfigError(Exception):
    """A config file that is missing, unreadable or incomplete."""


@dataclass
class Config:
    server: str
    device_id: str
    token: str = ""
    enrollment_secret: str = ""
    #: The enrollment request's Idempotency-Key, kept until the token comes.
    enrollment_request: str = ""
    handlers: str = ""
    state_dir: str = ""

    @property
    def base_url(self) -> str:
        """The server's pool prefix, ending in a slash (``http://host/pool/``)."""
        return self.server if self.server.endswith("/") else self.server + "/"


def load(path: Path) -> Config:
    """The config at ``path``; ``ConfigError`` saying what is wrong with it."""
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"No config file at {path}: run taskpool-agent enroll first.") from None
    except (OSError, ValueError) as error:  # TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"Cannot read the config file {path}: {error}") from None
    known = {field.name for field in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}.")
    for key, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string.")
    if not values.get("server") or not values.get("device_id"):
        raise ConfigError(f"{path}: server and device_id are required.")
    check_server(values["server"], where=f"{path}: server")
    return Config(**values)


def kept_paths(path: Path) -> tuple[str, str]:
    """The ``handlers`` and ``state_dir`` the config file at ``path`` names ("" for none),
    whatever else it holds or lacks: a file prepared with them alone, before enrolling."""
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except (OSError, ValueError):
        return "", ""
    handlers, state_dir = values.get("handlers", ""), values.get("state_dir", "")
    return (
        handlers if isinstance(handlers, str) else "",
        state_dir if isinstance(state_dir, str) else "",
    )


def token_claims(token: str) -> dict[str, Any]:
    """A token's claims, read without checking its signature (the server does); empty for
    a token whose payload is not a JSON object."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_device(token: str) -> str | None:
    """The device a device token names (its ``device_id`` claim); ``None`` for a token that
    does not say."""
    device = token_claims(token).get("device_id")
    return device if isinstance(device, str) else None


def check_server(url: str, *, where: str = "server") -> None:
    """``ConfigError`` unless ``url`` is an http(s) URL with a host (else every call would fail
    and be retried for ever as a network error)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    printable = url.isprintable() and not any(character.isspace() for character in url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or not printable:
        raise ConfigError(
            f"{where} must be an http:// or https:// URL, like https://host/pool/, not {url!r}."
        )


def save(path: Path, config: Config) -> None:
    """Write ``config`` to ``path``, mode 0600 from its first byte, replacing it whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # JSON's string escapes are valid TOML basic strings.
    text = "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in asdict(config).items() if value
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(descriptor, 0o600)  # also when a temporary file was left with another mode
        file.write(text)
        file.flush()
        os.fsync(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut: the token is in place
    finally:
        os.close(directory)
