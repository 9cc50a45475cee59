"""The client of a served model: :class:`ServedModel` calls it like a local model.

Refusals come back as exceptions: :class:`RequestRejected` (413, 422: change the request) or
:class:`ServerBusy` (429, 503, 504: the same request may pass later).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from labkit.serving.api import TopK
from labkit.serving.loopback import check_url

__all__ = ["RequestRejected", "ServedModel", "ServerBusy", "encode_request"]


# ----------------------------------------------------------------------------------- client
class RequestRejected(ValueError):
    """The server refused the request as invalid (413, 422): the caller must change it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class ServerBusy(RuntimeError):
    """The server could not answer now (429, 503, 504): the same request may pass later."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {message}")


def _json_default(obj: object) -> Any:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON")


def encode_request(x: object) -> bytes:
    """The JSON body a client sends for ``x`` (a tensor declares its dtype)."""
    if isinstance(x, torch.Tensor):
        values = x.real if x.is_complex() else x
        payload: dict[str, Any] = {"inputs": values.detach().cpu().tolist()}
        payload["dtype"] = str(x.dtype).removeprefix("torch.")
    else:
        payload = {"inputs": x}
    try:
        return json.dumps(payload, default=_json_default).encode()
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot encode the inputs as JSON ({err}); send a torch.Tensor") from None


class ServedModel:
    """A client that calls a served model like a local one: ``client(x)`` returns its answer.

    Answers come back in the API's output form: probabilities ``(N, C)``, a
    :class:`~labkit.serving.TopK`, or labels ``(N,)``. Refusals raise :class:`RequestRejected`
    (413, 422, a ``ValueError``) or :class:`ServerBusy` (429, 503, 504); anything else raises
    ``RuntimeError``. Only loopback URLs are accepted.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        import httpx

        self.url = check_url(url)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def post_json(self, payload: object) -> Any:
        """POST any JSON-able payload to ``/predict`` and return the raw ``httpx.Response``."""
        return self._http.post("/predict", content=json.dumps(payload).encode(), headers=_JSON)

    def predict(self, x: object) -> torch.Tensor | TopK:
        """Send ``x`` and return the answer (see the class docstring)."""
        response = self._http.post("/predict", content=encode_request(x), headers=_JSON)
        body = _body(response)
        if response.status_code == 200:
            if body["output"] == "label":
                return torch.tensor(body["labels"], dtype=torch.long)
            if body["output"] == "top_k":
                return TopK(torch.tensor(body["scores"]), torch.tensor(body["classes"], dtype=torch.long))
            return torch.tensor(body["scores"])
        detail = str(body.get("detail", response.text))
        if response.status_code in (413, 422):
            raise RequestRejected(response.status_code, detail)
        if response.status_code in (429, 503, 504):
            after = response.headers.get("retry-after")
            raise ServerBusy(response.status_code, detail, retry_after=float(after) if after else None)
        raise RuntimeError(f"HTTP {response.status_code}: {detail}")

    __call__ = predict

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer."""
        return dict(self._http.get("/health").json())

    def metrics(self) -> dict[str, Any]:
        """The server's ``/metrics`` answer: responses by status, forward passes, latency."""
        return dict(self._http.get("/metrics").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServedModel({self.url!r})"


_JSON = {"content-type": "application/json"}


def _body(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text}
    return body if isinstance(body, dict) else {"detail": str(body)}
