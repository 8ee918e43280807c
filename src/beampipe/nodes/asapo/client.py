"""What ``asapo_source`` and ``asapo_sink`` share: the connection parameters, the token, the
client modules and the errors that name what to check.

The client modules are the official ASAP::O wheels ``asapo_consumer`` and ``asapo_producer``
(PyPI, 25.3 or later; ``pip install 'beampipe[asapo]'``), imported when a node starts, not when
beampipe is imported. The environment variable ``BEAMPIPE_ASAPO_CLIENT`` may name a package
that holds modules of the same names instead: beampipe's tests set it to ``asapo_fake``, a fake
of the documented client API backed by a fake broker process (``tests/fakes/asapo_fake``; it is
not the real service). Unset, the real wheels are used.

Reference: ASAP::O documentation, https://asapo.pages.desy.de/asapo/ (consumer and producer
clients, "Acknowledgements", "Datasets", "Stream finished flag").
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Literal

from pydantic import Field, model_validator

import beampipe

__all__ = [
    "CLIENT_ENV",
    "AsapoError",
    "AsapoParams",
    "connection_error",
    "hint",
    "load_client",
    "read_token",
]

CLIENT_ENV = "BEAMPIPE_ASAPO_CLIENT"
"""Environment variable: the package holding ``asapo_consumer``/``asapo_producer`` modules to
use instead of the official wheels (empty or unset: the wheels)."""

_JWT = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]*$")
"""What an ASAP::O token (a JSON Web Token) looks like."""

_HINTS = {
    "AsapoUnavailableServiceError": "check that the endpoint {endpoint!r} is right and that the "
    "ASAP::O services run there",
    "AsapoTimeOutError": "check that the endpoint {endpoint!r} is right and that the ASAP::O "
    "services run there",
    "AsapoWrongInputError": "check the token ({token}), the beamtime {beamtime!r} and the data "
    "source {data_source!r}",
    "AsapoUnsupportedClientError": "the client wheels do not fit the version of the ASAP::O "
    "services: install the matching asapo_consumer/asapo_producer",
    "AsapoLocalIOError": "the data is not in the ASAP::O cache and could not be read from its "
    "file: check has_filesystem and source_path",
    "AsapoDataNotInCacheError": "the data is no longer in the ASAP::O cache: check "
    "has_filesystem and source_path, or the ingest mode of the producer",
}


class AsapoError(RuntimeError):
    """An ASAP::O connector failed: the message names the node, what it was doing (stream and
    message id where there is one), the client's exception and what to check."""


class AsapoParams(beampipe.Params):
    """The parameters every ASAP::O node has.

    ``endpoint``: ``host:port`` of the ASAP::O services (the discovery endpoint, as given to
    ``create_consumer``/``create_producer``). ``beamtime``: beamtime id. ``data_source``: the
    data source's name. ``token_file`` (an input path, relative to the pipeline file) or
    ``token_env`` (the name of an environment variable): where the beamtime's access token is;
    exactly one of the two, never the token itself. ``timeout``: seconds the client waits for
    the services (``timeout_ms`` of the client).
    """

    endpoint: str = Field(min_length=1)
    beamtime: str = Field(min_length=1)
    data_source: str = Field(min_length=1)
    token_file: beampipe.InputPath | None = None
    token_env: str | None = None
    timeout: float = Field(5.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_token_source(self) -> AsapoParams:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError(
                "give exactly one of token_file (a file holding the token) and token_env (the "
                "name of an environment variable holding it); the token itself never goes in "
                "the pipeline file"
            )
        if self.token_env is not None and _JWT.match(self.token_env):
            raise ValueError(
                "token_env is the name of an environment variable, but this looks like a token "
                "itself: keep the token out of the pipeline file (export it, e.g. as "
                "ASAPO_TOKEN, and write token_env: ASAPO_TOKEN)"
            )
        return self

    @property
    def token_origin(self) -> str:
        """Where the token is read from, for messages (never the token)."""
        if self.token_file is not None:
            return f"token_file {self.token_file!r}"
        return f"token_env {self.token_env!r}"


def read_token(params: AsapoParams, node: str, label: str) -> str:
    """The access token from ``params.token_file`` or ``params.token_env`` (stripped).

    Raises:
        AsapoError: the file cannot be read, the variable is not set, or either is empty.
    """
    if params.token_file is not None:
        try:
            token = Path(params.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AsapoError(f"{label} {node!r}: cannot read the token: {exc}") from None
    else:
        assert params.token_env is not None
        if params.token_env not in os.environ:
            raise AsapoError(
                f"{label} {node!r}: the environment variable {params.token_env!r} (token_env) "
                "is not set: export the beamtime's ASAP::O token in it before the run"
            )
        token = os.environ[params.token_env].strip()
    if not token:
        raise AsapoError(f"{label} {node!r}: the token ({params.token_origin}) is empty")
    return token


def load_client(kind: Literal["consumer", "producer"], node: str, label: str) -> ModuleType:
    """The ``asapo_consumer`` or ``asapo_producer`` module: the official wheel, or the one in
    the package that ``BEAMPIPE_ASAPO_CLIENT`` names.

    Raises:
        AsapoError: the module cannot be imported (the message says what to install).
    """
    package = os.environ.get(CLIENT_ENV, "").strip()
    name = f"{package}.asapo_{kind}" if package else f"asapo_{kind}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        where = (
            f"{CLIENT_ENV}={package!r} names a package without it"
            if package
            else "install the ASAP::O client wheels: pip install 'beampipe[asapo]' "
            "(asapo_consumer and asapo_producer 25.3 or later, from PyPI)"
        )
        raise AsapoError(f"{label} {node!r}: cannot import {name!r} ({exc}): {where}") from None


def hint(exc: BaseException, params: AsapoParams) -> str:
    """What to check after the client exception ``exc``, by its type (endpoint, token,
    beamtime, data source, file access); ``""`` when there is nothing specific."""
    text = _HINTS.get(type(exc).__name__, "")
    return text.format(
        endpoint=params.endpoint,
        token=params.token_origin,
        beamtime=params.beamtime,
        data_source=params.data_source,
    )


def connection_error(
    exc: BaseException, params: AsapoParams, node: str, label: str, doing: str
) -> AsapoError:
    """An :class:`AsapoError` for the client exception ``exc``, raised while ``doing``: the
    exception's type and text and what to check (:func:`hint`)."""
    text = f"{label} {node!r}: {doing}: {type(exc).__name__}: {exc}"
    what = hint(exc, params)
    return AsapoError(f"{text}; {what}" if what else text)
