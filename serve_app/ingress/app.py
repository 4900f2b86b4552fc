"""The ingress's FastAPI app: routes, the request-id middleware, and OpenAI-style errors from every layer.

`build_fastapi_app(ingress)` binds the routes to one `Ingress` (serve_app/ingress/replica.py): Ray Serve calls it
through `Ingress.__serve_build_asgi_app__` when a replica starts, and unit tests call it on an ingress built with
fake backends. No vLLM here: the API docs' request-body schemas come from vLLM's request types, imported only when
/openapi.json is first asked for.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.endpoints import CHAT, COMPLETION, ENDPOINTS, RESPONSES, Endpoint
from serve_app.api.errors import ServeAppError, error_body, validation_error

logger = logging.getLogger("ray.serve")


REQUEST_ID_HEADER = "x-request-id"
_USABLE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces: safe in ids and logs


def request_id_of(request: Request) -> str:
    """The request's id: set by `RequestIds` (a fresh one if the request did not pass through it)."""
    existing = getattr(request.state, "request_id", None)
    if existing is None:
        existing = f"req-{uuid.uuid4().hex}"
        request.state.request_id = existing
    return existing


class RequestIds:
    """ASGI middleware: one id per request, in the response's one `x-request-id` header, the engine's request id
    (so the response body's `id`), the logs and the trace.

    Behind Ray Serve (its proxy, HAProxy or direct ingress), Ray's RequestIdMiddleware has already given every
    request that header (the client's id as sent, else a fresh uuid) and appends it to the response itself: there
    `echo=False`, the request is named by that id whatever it is (else the client would read an id that names
    nothing; HTTP keeps CR and LF out of header values), and the response carries Ray's header alone, not two.
    Standing alone (`echo=True`), the app adopts the request's own id when it is printable ASCII without spaces, at
    most 128 characters, else makes a fresh `req-<uuid>`, and sends it. The engine stays safe with a client's
    repeated id: vLLM makes its internal request ids unique.

    An exception no route handled becomes an OpenAI-style 500 naming the request id (internals go to the log).
    Pure ASGI: nothing between a streamed response's frames.
    """

    def __init__(self, app: ASGIApp, echo: bool = True):
        self.app, self.echo = app, echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER)
        usable = given and (not self.echo or _USABLE_REQUEST_ID.fullmatch(given))
        request_id = given if usable else f"req-{uuid.uuid4().hex}"
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}  # read by request_id_of
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.echo:
                    MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - whatever a route did not anticipate is still an OpenAI error
            if started:
                raise  # mid-response: the server logs it and drops the connection
            logger.exception("Unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"),
                             request_id)
            response = JSONResponse(
                error_body(f"Internal server error ({type(exc).__name__}); request id {request_id}",
                           type="server_error", code="internal_error"), status_code=500)
            await response(scope, receive, send_with_id)


def not_found(request: Request) -> JSONResponse:
    return JSONResponse(error_body(f"Invalid URL ({request.method} {request.url.path[:200]}).",
                                   type="invalid_request_error", code="not_found"), status_code=404)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Router-level errors (no such path, a method the path does not take) in the OpenAI error format."""
    if exc.status_code == 404:
        return not_found(request)
    if exc.status_code == 405:
        message, code = f"Method {request.method} is not allowed for {request.url.path[:200]}.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    error_type = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return JSONResponse(error_body(message, type=error_type, code=code), status_code=exc.status_code,
                        headers=exc.headers)


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own parameter validation (a 422 `{"detail": ...}` by default) as an OpenAI-style 400."""
    error = validation_error(exc) if exc.errors() else ServeAppError("Invalid request.", code="invalid_value")
    return JSONResponse(error.to_body(), status_code=error.status_code)


def install_error_handlers(fastapi_app: FastAPI) -> None:
    fastapi_app.add_exception_handler(StarletteHTTPException, http_error)
    fastapi_app.add_exception_handler(RequestValidationError, request_validation_error)


def api_docs_page(request: Request) -> Response:
    """The OpenAPI schema, Swagger UI or ReDoc page for `request`'s path, as FastAPI would serve them."""
    root_path = request.scope.get("root_path", "").rstrip("/")
    if request.url.path.endswith("/openapi.json"):
        return JSONResponse(request.app.openapi())
    if request.url.path.endswith("/docs"):
        return get_swagger_ui_html(openapi_url=root_path + "/openapi.json", title=f"{request.app.title} - Swagger UI")
    return get_redoc_html(openapi_url=root_path + "/openapi.json", title=f"{request.app.title} - ReDoc")


def _with_request_schemas(fastapi_app: FastAPI) -> None:
    """`fastapi_app.openapi()` documents each endpoint's JSON body with vLLM's request type (imported on first use)."""
    plain_openapi = fastapi_app.openapi

    def openapi() -> dict[str, Any]:
        if fastapi_app.openapi_schema is None:
            schema = plain_openapi()
            for endpoint in ENDPOINTS.values():
                schema["paths"][endpoint.route]["post"].update(_request_schema(endpoint))
            fastapi_app.openapi_schema = schema
        return fastapi_app.openapi_schema

    fastapi_app.openapi = openapi


def _request_schema(endpoint: Endpoint) -> dict[str, Any]:
    try:
        from serve_app.api.openapi import json_body
        from serve_app.server.openai_frontend import request_type

        return json_body(request_type(endpoint.name))
    except Exception:  # noqa: BLE001 - documentation only; never block serving on a schema
        return {}


def build_fastapi_app(ingress: Any, echo_request_id: bool = True) -> FastAPI:
    """The app with its routes bound to `ingress` (a serve_app.ingress.replica.Ingress; None: an app for its
    OpenAPI schema only). `echo_request_id=False` behind Ray Serve, whose own middleware sends the header."""
    # The API docs are routes below (FastAPI's own are fixed before the config is known), so
    # `api_docs_enabled: false` turns them off.
    app = FastAPI(title="serve_app", description="OpenAI-compatible LLM serving on Ray Serve", version="0.2.0",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestIds, echo=echo_request_id)
    install_error_handlers(app)
    _with_request_schemas(app)

    @app.get("/health")
    async def health() -> Response:
        return await ingress.health()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return await ingress.metrics(request)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        return ingress.list_models(request)

    @app.post(CHAT.route)
    async def chat_completions(request: Request) -> Response:
        return await ingress.serve(request, CHAT)

    @app.post(COMPLETION.route)
    async def completions(request: Request) -> Response:
        return await ingress.serve(request, COMPLETION)

    @app.post(RESPONSES.route)
    async def responses(request: Request) -> Response:
        return await ingress.serve(request, RESPONSES)

    @app.get("/")
    @app.get("/playground")
    async def playground() -> Response:
        return ingress.playground()

    @app.get("/openapi.json", include_in_schema=False)
    @app.get("/docs", include_in_schema=False)
    @app.get("/redoc", include_in_schema=False)
    async def api_docs(request: Request) -> Response:
        if not ingress.api_docs_enabled:
            return not_found(request)
        return api_docs_page(request)

    return app


def openapi_schema() -> dict[str, Any]:
    """The ingress's OpenAPI document (vLLM's request types as the bodies), without an ingress."""
    return build_fastapi_app(None).openapi()
