"""Where an event is sent: a signed POST to WEBHOOK_URL, or a run of a Coze workflow. HTTP (urllib) only.

The standard library's client: the service's image carries no HTTP client package for two POSTs.

A target either returns (delivered) or raises `Undelivered` with a short reason that is stored as
the event's last error: never the body, never the receiver's answer text beyond its status.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson

from app.events import ID_HEADER, SEND_TIMEOUT_S, SIGNATURE_HEADER, signature
from app.settings import Settings


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is not a 2xx: retried, and the operator sees why (urllib raises it as an error)


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(url: str, data: bytes, headers: dict) -> tuple[int, bytes]:
    """POST within SEND_TIMEOUT_S: (status, body); Undelivered when no HTTP answer came."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=SEND_TIMEOUT_S) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:  # an answer, with a status that is not 2xx (or a redirect)
        exc.close()
        return exc.code, b""
    except urllib.error.URLError as exc:
        raise Undelivered(type(exc.reason).__name__ if isinstance(exc.reason, Exception) else "URLError") from None
    except (OSError, ValueError) as exc:  # a timeout while reading, a connection reset, a malformed answer
        raise Undelivered(type(exc).__name__) from None


class Undelivered(Exception):
    """The receiver did not take the event; the message says why (stored as the last error)."""


class WebhookTarget:
    """POST the body to WEBHOOK_URL, signed; a 2xx answer within SEND_TIMEOUT_S is delivery."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret

    def send(self, event_id: str, body: str, fields: dict) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "coze-session-node",
            SIGNATURE_HEADER: signature(self.secret, int(time.time()), body),
            ID_HEADER: event_id,
        }
        status, _ = _post(self.url, body.encode(), headers)
        if not 200 <= status < 300:
            raise Undelivered(f"HTTP {status}")


class CozeWorkflowTarget:
    """Run a Coze workflow with the event's fields as its inputs (Coze's OpenAPI "run workflow").

    Request shape, from Coze Studio (coze-dev/coze-studio): `idl/workflow/workflow.thrift`,
    struct OpenAPIRunFlowRequest (`workflow_id`, `parameters`, `is_async`), served by
    `backend/api/handler/coze/workflow_service.go` (OpenAPIRunFlow) at POST /v1/workflow/run with a
    bearer personal access token; the cloud API (docs: coze.com/docs/developer_guides/workflow_run)
    takes the same body. The IDL types `parameters` as JSON text and the handler turns an object
    into it, so the object sent here works on both. The answer is `{"code", "msg", "execute_id"...}`:
    `code` other than 0 is a failure even with HTTP 200. `is_async: true` answers at once (the
    workflow runs in Coze), so a slow workflow never holds the sender.
    """

    def __init__(self, base: str, token: str, workflow_id: str) -> None:
        self.url = base.rstrip("/") + "/v1/workflow/run"
        self.token, self.workflow_id = token, workflow_id

    def send(self, event_id: str, body: str, fields: dict) -> None:
        request = {"workflow_id": self.workflow_id, "parameters": fields, "is_async": True}
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", ID_HEADER: event_id}
        status, answer = _post(self.url, orjson.dumps(request), headers)
        if not 200 <= status < 300:
            raise Undelivered(f"HTTP {status}")
        try:
            code = orjson.loads(answer).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            raise Undelivered("Coze answered without a JSON object") from None
        if code != 0:
            raise Undelivered(f"Coze code {code}")


def target_for(settings: Settings) -> WebhookTarget | CozeWorkflowTarget:
    if settings.webhook_target == "coze_workflow":
        return CozeWorkflowTarget(settings.coze_api_base, settings.coze_api_token, settings.coze_workflow_id)
    return WebhookTarget(settings.webhook_url, settings.webhook_secret)
