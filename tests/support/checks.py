"""What the tests check responses and figures against: the one JSON error envelope, reliability figure files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def error_body_ok(response: Any) -> bool:
    """An error response carries the one JSON envelope (httpx, requests or schemathesis responses)."""
    ctype = response.headers.get("content-type", "")
    if isinstance(ctype, list):  # schemathesis: header -> list of values
        ctype = ctype[0] if ctype else ""
    if not ctype.startswith("application/json"):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    if urlsplit(str(response.request.url)).path.startswith("/v2"):  # the Open Inference Protocol's own error shape
        return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
    )


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, str]:
    """The response has ``status`` and the error envelope (with ``code`` when given); returns the error.

    Under ``/v2`` the envelope is the Open Inference Protocol's ``{"error": "<message>"}`` and the code is in the
    ``X-Error-Code`` header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.request.url.path.startswith("/v2"):
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
        if code is not None:
            assert response.headers["x-error-code"] == code, response.headers
        return {"code": response.headers["x-error-code"], "message": body["error"]}
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def report(name: str, data: dict) -> None:
    """Print a figure set and write it to ``$VSR_RELIABILITY_DIR/<name>.json`` (docs/reliability.md quotes them)."""
    print(f"\n{name}:", json.dumps(data))
    if out := os.environ.get("VSR_RELIABILITY_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=1))
