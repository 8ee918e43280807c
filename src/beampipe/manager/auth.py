"""The manager's token: who may change the state of deployed pipelines.

One random token per state home (``secrets.token_urlsafe(32)``: 43 URL-safe characters),
created at the manager's first start in ``HOME/token`` with permissions 0600 (readable by its
owner only). The CLI reads the file and sends ``Authorization: Bearer TOKEN`` (RFC 6750); the
supervisors read it too and require it on their command sockets.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"


def token_path(home: Path) -> Path:
    """Where the token of state home ``home`` is kept."""
    return home / TOKEN_FILE


def ensure_home(home: Path) -> None:
    """Create the state home ``home`` if it does not exist, readable by its owner only (mode
    0700: the pipelines' run directories, logs and supervisor records are inside). An existing
    folder keeps its mode.

    Raises:
        OSError: it cannot be created.
    """
    home.mkdir(parents=True, exist_ok=True, mode=0o700)


def ensure_token(home: Path) -> str:
    """The token of ``home``, created (mode 0600) if there is none yet.

    Raises:
        OSError: ``home`` cannot be created or the token file written or read.
    """
    ensure_home(home)
    path = token_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(home)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return read_token(home)


def read_token(home: Path) -> str:
    """The token of ``home``.

    Raises:
        FileNotFoundError: no manager has been started with this home yet.
        PermissionError: the file belongs to someone else.
    """
    return token_path(home).read_text().strip()


def same_token(given: object, token: str) -> bool:
    """Whether ``given`` (whatever a request carried: None, a number, a list...) is the string
    ``token`` (compared in constant time)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())
