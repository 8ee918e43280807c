"""FAKE ``asapo_consumer``: the functions, classes and exceptions of the official wheel
(25.3) that beampipe uses, with their documented behaviour, on :mod:`asapo_fake.broker`.
Not the real client and not the real service (see :mod:`asapo_fake`)."""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from asapo_fake.connection import BrokerError, Connection, NoReply


class AsapoConsumerError(Exception):
    pass


class AsapoWrongInputError(AsapoConsumerError):
    pass


class AsapoInterruptedTransactionError(AsapoConsumerError):
    pass


class AsapoUnavailableServiceError(AsapoConsumerError):
    pass


class AsapoLocalIOError(AsapoConsumerError):
    pass


class AsapoDataNotInCacheError(AsapoConsumerError):
    pass


class AsapoUnsupportedClientError(AsapoConsumerError):
    pass


class AsapoStreamFinishedError(AsapoConsumerError):
    def __init__(self, message: str, id_max: int | None = None, next_stream: str | None = None):
        super().__init__(message)
        self.id_max = id_max
        self.next_stream = next_stream


class AsapoEndOfStreamError(AsapoConsumerError):
    def __init__(self, message: str, id_max: int | None = None):
        super().__init__(message)
        self.id_max = id_max


class AsapoPartialDataError(AsapoConsumerError):
    def __init__(self, message: str, partial_data: dict[str, Any]):
        super().__init__(message)
        self.partial_data = partial_data


class AsapoNoDataError(AsapoConsumerError):
    def __init__(self, message: str, id: int | None = None, id_max: int | None = None):
        super().__init__(message)
        self.id_max = id_max
        self.id = id


class PyConsumer:
    """A consumer of one beamtime's data source (see ``create_consumer``)."""

    def __init__(
        self, endpoint: str, beamtime: str, data_source: str, token: str, timeout_ms: int
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_ms)
        self.resend = [False, 0, 0]
        self.instance = f"{socket.gethostname()}_{os.getpid()}_{id(self):x}"
        credentials = {"beamtime": beamtime, "data_source": data_source, "token": token}
        self.connection = Connection(endpoint, credentials)

    def _call(self, op: str, wait: bool = False, **args: Any) -> Any:
        try:
            return self.connection.call(op, self.timeout_ms, self.timeout_ms if wait else 0, **args)
        except NoReply as exc:
            raise AsapoUnavailableServiceError(
                f"error: service unavailable, details: destination:{self.endpoint}, caused by: "
                f"{exc}"
            ) from None
        except BrokerError as exc:
            raise globals()[exc.kind](exc.message, **exc.fields) from None

    def set_timeout(self, timeout: int) -> None:
        self.timeout_ms = int(timeout)

    def set_resend_nacs(self, resend: bool, delay_ms: int, resend_attempts: int) -> None:
        self.resend = [bool(resend), int(delay_ms), int(resend_attempts)]

    def generate_group_id(self) -> str:
        return self._call("group_id")

    def get_source_list(self) -> list[str]:
        return self._call("source_list")

    def get_stream_list(
        self, from_stream: str = "", filter: str = "all", detailed: bool = True
    ) -> list[dict[str, Any]]:
        return self._call("stream_list", from_stream=from_stream, filter=filter)

    def get_stream_info(self, stream: str, timeout_ms: int = 1000) -> dict[str, Any]:
        return self._call("stream_info", stream=stream)

    def get_stream_meta(self, stream: str | None = None) -> dict[str, Any]:
        return self._call("stream_meta", stream=stream or "default")

    def get_current_size(self, stream: str | None = None) -> int:
        return self._call("current_size", stream=stream or "default")

    def _next(self, group_id: str, stream: str | None, **args: Any) -> Any:
        return self._call(
            "next",
            wait=True,
            group=group_id,
            stream=stream or "default",
            resend=self.resend,
            consumer=self.instance,
            **args,
        )

    def get_next(
        self,
        group_id: str,
        meta_only: bool = True,
        stream: str | None = None,
        ordered: bool = True,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        got = self._next(group_id, stream, dataset=False, min_size=0, meta_only=meta_only)
        return _array(got["data"]), got["meta"]

    def get_next_dataset(
        self,
        group_id: str,
        min_size: int = 0,
        stream: str | None = None,
        ordered: bool = True,
        substream: int = 0,
    ) -> dict[str, Any]:
        return self._next(group_id, stream, dataset=True, min_size=min_size, meta_only=True)

    def get_by_id(
        self, id: int, meta_only: bool = True, stream: str | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        got = self._call(
            "by_id",
            wait=True,
            id=id,
            stream=stream or "default",
            dataset=False,
            min_size=0,
            meta_only=meta_only,
        )
        return _array(got["data"]), got["meta"]

    def get_dataset_by_id(
        self, id: int, min_size: int = 0, stream: str | None = None, substream: int = 0
    ) -> dict[str, Any]:
        return self._call(
            "by_id",
            wait=True,
            id=id,
            stream=stream or "default",
            dataset=True,
            min_size=min_size,
            meta_only=True,
        )

    def retrieve_data(self, meta: dict[str, Any]) -> np.ndarray:
        data = self._call(
            "data", stream=meta["stream"], id=meta["_id"], substream=meta["dataset_substream"]
        )
        return _array(data)

    def acknowledge(self, group_id: str, id: int, stream: str | None = None) -> None:
        self._call("ack", group=group_id, id=id, stream=stream or "default")

    def neg_acknowledge(
        self, group_id: str, id: int, delay_ms: int = 0, stream: str | None = None
    ) -> None:
        self._call("nack", group=group_id, id=id, delay_ms=delay_ms, stream=stream or "default")


def _array(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.uint8)


def create_consumer(
    server_name: str,
    source_path: str,
    has_filesystem: bool,
    beamtime_id: str,
    data_source: str,
    token: str,
    timeout_ms: int,
    instance_id: str = "auto",
    pipeline_step: str = "auto",
) -> PyConsumer:
    """A consumer; like the real one, it does not contact the service until it is used."""
    return PyConsumer(server_name, beamtime_id, data_source, token, timeout_ms)
