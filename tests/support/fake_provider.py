"""A fake LLM provider: an HTTP server the real `openai` and `anthropic` SDKs talk to.

Standard library only. Start it on 127.0.0.1 (a free port is picked), point an SDK client at
`openai_base_url` or `anthropic_base_url`, and script faults with `fail_next`, `hang_next`,
`fail_models` and `slow_stream`. Every request is logged in `calls`.

    with FakeProvider() as fake:
        client = openai.OpenAI(api_key="test", base_url=fake.openai_base_url)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert fake.calls[-1].status == 200

Endpoints: POST /v1/chat/completions and /v1/embeddings (OpenAI shapes), POST /v1/messages
(Anthropic shape). Anything else answers 404 (405 for another method on a known path).

Behaviour worth knowing:
- Answers are deterministic: "Simulated answer to: " + the last user message (first 200 characters;
  text parts joined with a space); `{"answer": ...}` in JSON mode. Token counts are
  `ceil(UTF-8 bytes / 4)`, plus 3 per message (the Anthropic `system` prompt counts as one).
- With tools (and tool_choice not "none") the answer is a call to the first tool (or the one
  tool_choice names) with arguments `{}`, unless the conversation ends with a tool result: then
  the model answers in text, so agent loops terminate.
- Auth: OpenAI needs `Authorization: Bearer <key>`; Anthropic needs `x-api-key` or a bearer token
  (the installed anthropic SDK sends its api_key as `Authorization: Bearer`).
- Order per request: `hang_next`, then `fail_next` / `fail_models`, then auth, then validation.
  `fail_next` and `hang_next` queue: `fail_next(1, status=429); fail_next(1, status=500)` fails
  the next request with 429 and the one after with 500.
- `latency_s` is waited before answering; a stream also waits `latency_s / n_chunks` between its
  content chunks, and `slow_stream` delay between every two events.
- `stop()` drops requests still waiting (latency, hang) and closes keep-alive connections.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import math
import secrets
import socket
import socketserver
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, cast

__all__ = ["Call", "FakeProvider"]

REQUEST_ID_HEADER = "x-cognitionos-request-id"
ATTEMPT_HEADER = "x-cognitionos-attempt"

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MESSAGES_PATH = "/v1/messages"

_Flavor = Literal["openai", "anthropic"]
_ROUTES: dict[str, _Flavor] = {CHAT_PATH: "openai", EMBEDDINGS_PATH: "openai", MESSAGES_PATH: "anthropic"}

ANSWER_PREFIX = "Simulated answer to: "
PROMPT_CHARS = 200
TOKENS_PER_MESSAGE = 3
STREAM_CHUNKS = 4
DEFAULT_EMBEDDING_DIMENSIONS = 1536
LARGE_EMBEDDING_DIMENSIONS = 3072
SYSTEM_FINGERPRINT = "fp_cognitionos_fake"

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {429: "requests"}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


@dataclass(frozen=True)
class Call:
    """One request the fake received, with what it answered."""

    path: str
    model: str
    request_id: str | None
    attempt: str | None
    stream: bool
    status: int
    prompt_tokens: int
    completion_tokens: int
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Failure:
    status: int
    error_type: str | None
    message: str
    retry_after: float | None = None


@dataclass
class _Answer:
    """What one request gets back: a JSON document, or a list of server-sent events."""

    status: int
    payload: dict[str, Any] | None = None
    events: list[tuple[bytes, bool]] | None = None  # (encoded event, is a content chunk)
    content_chunks: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- helpers


def _tokens(byte_count: int) -> int:
    return math.ceil(byte_count / 4)


def _text_parts(content: object) -> list[str]:
    """The text of a message content: a string, or the text of a list of parts/blocks."""
    if isinstance(content, str):
        return [content]
    parts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
            elif part.get("type") == "tool_result":
                parts.extend(_text_parts(part.get("content")))
    return parts


def _content_bytes(content: object) -> int:
    return sum(len(part.encode()) for part in _text_parts(content))


def _prompt_tokens(contents: list[object]) -> int:
    return _tokens(sum(_content_bytes(content) for content in contents)) + TOKENS_PER_MESSAGE * len(contents)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(_text_parts(message.get("content")))
    return ""


def _answer_text(messages: list[Any], *, json_mode: bool) -> str:
    text = ANSWER_PREFIX + _last_user_text(messages)[:PROMPT_CHARS]
    return json.dumps({"answer": text}) if json_mode else text


def _limit_text(text: str, limit: int | None) -> tuple[str, int, bool]:
    """(text, completion tokens, truncated) once cut to `limit` tokens (4 bytes each)."""
    encoded = text.encode()
    tokens = _tokens(len(encoded))
    if limit is None or limit >= tokens:
        return text, tokens, False
    return encoded[: 4 * limit].decode("utf-8", errors="ignore"), limit, True


def _split(text: str, pieces: int = STREAM_CHUNKS) -> list[str]:
    if not text:
        return [""]
    size = math.ceil(len(text) / pieces)
    return [text[start : start + size] for start in range(0, len(text), size)]


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _RequestError(400, f"`{name}` must be a positive integer.")
    return int(value)


def _messages_of(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _RequestError(400, "`messages` must be a non-empty list.")
    return messages


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _RequestError(400, "`model` is required.")
    return model


def _last_is_tool_result(messages: list[Any]) -> bool:
    """Whether the conversation ends with a tool's result (the model then answers in text)."""
    last = messages[-1]
    if not isinstance(last, dict):
        return False
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )


@functools.lru_cache(maxsize=256)  # a 3072-float tuple is ~100 KB
def _embedding(text: str, dimensions: int) -> tuple[float, ...]:
    raw = array("h")
    raw.frombytes(hashlib.shake_256(text.encode()).digest(2 * dimensions))
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return tuple(value / norm for value in raw)


@functools.lru_cache(maxsize=1024)
def _embedding_base64(text: str, dimensions: int) -> str:
    floats = array("f", _embedding(text, dimensions))
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _openai_error(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    kind = error_type or _OPENAI_ERROR_TYPES.get(status) or fallback
    return {"error": {"message": message, "type": kind, "param": None, "code": _OPENAI_ERROR_CODES.get(status)}}


def _anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _error(flavor: _Flavor, status: int, message: str, error_type: str | None = None) -> _Answer:
    payload = _anthropic_error(status, message) if flavor == "anthropic" else _openai_error(status, message, error_type)
    return _Answer(status=status, payload=payload)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


# --------------------------------------------------------------------------- HTTP plumbing
#
# A small HTTP/1.1 server on socketserver (thread per connection, keep-alive, chunked SSE).
# http.server's BaseHTTPRequestHandler parses headers with the email package, which costs more
# than everything else a request does here; this parser keeps the fake off benchmark profiles.

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_MAX_LINE = 65536
_MAX_HEADERS = 200


class _BadRequest(Exception):
    pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away (timed out, closed its pool): expected, not worth a traceback
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True
    server: _Server
    connection: socket.socket

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            while self._handle_one():
                pass
        except _BadRequest:
            with contextlib.suppress(OSError):
                body = _json(_openai_error(400, "Malformed HTTP request."))
                head = f"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                self.wfile.write(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)

    def _readline(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest
        return line

    def _handle_one(self) -> bool:
        """Serve one request; whether the connection stays open for another."""
        line = self._readline()
        while line in (b"\r\n", b"\n"):  # tolerate blank lines between requests
            line = self._readline()
        if not line:
            return False
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            raise _BadRequest
        method, target, version = (part.decode("latin-1") for part in parts)
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            header = self._readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw = self._read_body(headers)

        provider = self.server.provider
        answer, delay = provider._answer(method, target.split("?", 1)[0], raw, headers)
        provider._in_flight(+1)
        try:
            if answer.events is None:
                if not provider._sleep(delay):
                    return False
                self._send_json(answer, keep_alive=keep_alive, head_only=method == "HEAD")
                return keep_alive
            return self._send_events(answer, delay, keep_alive=keep_alive and version == "HTTP/1.1")
        except OSError:
            return False
        finally:
            provider._in_flight(-1)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise _BadRequest from None
            return self.rfile.read(size) if size > 0 else b""
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                size = int(self._readline().split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise _BadRequest from None
            if size == 0:
                while self._readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self._readline()

    @staticmethod
    def _head(status: int, headers: Iterable[tuple[str, str]], *, keep_alive: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(self, answer: _Answer, *, keep_alive: bool, head_only: bool) -> None:
        body = _json(answer.payload or {})
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *answer.headers]
        head = self._head(answer.status, headers, keep_alive=keep_alive)
        self.wfile.write(head if head_only else head + body)

    def _send_events(self, answer: _Answer, delay: float, *, keep_alive: bool) -> bool:
        """Send server-sent events, chunked (or until close for HTTP/1.0); whether to keep the connection."""
        provider = self.server.provider
        chunked = keep_alive
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"), *answer.headers]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        head = self._head(answer.status, headers, keep_alive=keep_alive)
        events = answer.events or []
        chunk_delay = provider._chunk_delay_s
        content_delay = provider.latency_s / answer.content_chunks if answer.content_chunks else 0.0

        def frame(data: bytes) -> bytes:
            return b"%X\r\n%s\r\n" % (len(data), data) if chunked else data

        gaps: list[float] = []
        seen_content = False
        for index, (_, is_content) in enumerate(events):
            gap = chunk_delay if index else 0.0
            if is_content:
                gap += content_delay if seen_content else 0.0
                seen_content = True
            gaps.append(gap)
        tail = b"0\r\n\r\n" if chunked else b""

        if not provider._sleep(delay):
            return False
        if not any(gaps):
            self.wfile.write(head + b"".join(frame(data) for data, _ in events) + tail)
            return keep_alive
        self.wfile.write(head)
        for (data, _), gap in zip(events, gaps, strict=True):
            if not provider._sleep(gap):
                return False
            self.wfile.write(frame(data))
        self.wfile.write(tail)
        return keep_alive


# --------------------------------------------------------------------------- the provider


class FakeProvider:
    """A fake OpenAI/Anthropic HTTP server on 127.0.0.1 for tests and benchmarks."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self._initial_latency_s = latency_s
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._failures: deque[_Failure] = deque()
        self._hangs: deque[float] = deque()
        self._failing_models: frozenset[str] = frozenset()
        self._failing_models_status = 503
        self._chunk_delay_s = 0.0
        self._extra_prompt_tokens = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._open = 0
        self.max_in_flight = 0  # the most requests it was answering at once since the last reset
        self._id_prefix = secrets.token_hex(6)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FakeProvider:
        if self._server is not None:
            raise RuntimeError("FakeProvider is already running")
        self._stopping.clear()
        server = _Server(self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping on latency or hang_next
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeProvider:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    # ----------------------------------------------------------------- scripting

    def fail_next(
        self,
        count: int,
        *,
        status: int = 500,
        retry_after: float | None = None,
        error_type: str = "server_error",
        message: str = "simulated failure",
    ) -> None:
        """The next `count` requests (after any failures already queued) answer `status` with an error body.

        `error_type` is the OpenAI error `type`; Anthropic's is derived from `status`. With
        `retry_after` (seconds) a Retry-After header is sent.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        failure = _Failure(status=status, error_type=error_type, message=message, retry_after=retry_after)
        with self._lock:
            self._failures.extend([failure] * count)

    def hang_next(self, count: int, *, seconds: float) -> None:
        """The next `count` requests (after any hangs already queued) wait `seconds`, then answer as usual."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._hangs.extend([seconds] * count)

    def fail_models(self, models: set[str], *, status: int = 503) -> None:
        """Every request naming one of `models` fails with `status`; `fail_models(set())` clears it."""
        with self._lock:
            self._failing_models = frozenset(models)
            self._failing_models_status = status

    def over_report(self, *, prompt_tokens: int) -> None:
        """Report `prompt_tokens` more prompt tokens than the request had on every chat answer, as a
        provider whose tokenizer counts more than any estimate would (0 restores true counts)."""
        self._extra_prompt_tokens = prompt_tokens

    def slow_stream(self, *, chunk_delay_s: float) -> None:
        """Wait `chunk_delay_s` between server-sent events (0 restores full speed)."""
        self._chunk_delay_s = chunk_delay_s

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        """Clear the log and every fault; `latency_s` goes back to the constructor's value."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()
            self._hangs.clear()
            self._failing_models = frozenset()
            self._failing_models_status = 503
            self.max_in_flight = self._open
        self._chunk_delay_s = 0.0
        self._extra_prompt_tokens = 0
        self.latency_s = self._initial_latency_s

    # ----------------------------------------------------------------- answering (server threads)

    @property
    def open_requests(self) -> int:
        """How many requests it is answering now."""
        with self._lock:
            return self._open

    def _in_flight(self, change: int) -> None:
        with self._lock:
            self._open += change
            self.max_in_flight = max(self.max_in_flight, self._open)

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the provider is stopping (the request is then dropped, not answered)."""
        if seconds > 0:
            return not self._stopping.wait(seconds)
        return True

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):010d}"

    def _answer(self, method: str, path: str, raw: bytes, headers: dict[str, str]) -> tuple[_Answer, float]:
        """The answer to one request, logged, and how long to wait before sending it (`headers` keys lowercase)."""
        flavor = _ROUTES.get(path)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        raw_model = body.get("model")
        model = raw_model if isinstance(raw_model, str) else ""

        hang = 0.0
        if flavor is None:
            answer = _error("openai", 404, f"Invalid URL ({method} {path})")
        elif method != "POST":
            answer = _error(flavor, 405, f"Method {method} not allowed on {path}")
        else:
            failure: _Failure | None = None
            with self._lock:
                if self._hangs:
                    hang = self._hangs.popleft()
                if self._failures:
                    failure = self._failures.popleft()
                elif model in self._failing_models:
                    message = f"The model `{model}` is unavailable (simulated)."
                    failure = _Failure(self._failing_models_status, None, message)
            if failure is not None:
                answer = _error(flavor, failure.status, failure.message, failure.error_type)
                if failure.retry_after is not None:
                    answer.headers.append(("Retry-After", _format_seconds(failure.retry_after)))
            else:
                answer = self._serve(flavor, path, body if isinstance(parsed, dict) else None, headers)

        request_id = f"req_{self._new_id()}"
        answer.headers.append(("request-id" if flavor == "anthropic" else "x-request-id", request_id))
        if answer.payload is not None and flavor == "anthropic" and answer.status >= 400:
            answer.payload["request_id"] = request_id
        call = Call(
            path=path,
            model=model,
            request_id=headers.get(REQUEST_ID_HEADER),
            attempt=headers.get(ATTEMPT_HEADER),
            stream=body.get("stream") is True,
            status=answer.status,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            body=body,
        )
        with self._lock:
            self._calls.append(call)
        return answer, hang + self.latency_s

    def _serve(self, flavor: _Flavor, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> _Answer:
        if not self._authorized(flavor, headers):
            missing = "Incorrect API key provided." if flavor == "openai" else "x-api-key header is required."
            return _error(flavor, 401, missing)
        if body is None:
            return _error(flavor, 400, "The request body is not a JSON object.")
        try:
            if path == CHAT_PATH:
                return self._chat(body)
            if path == EMBEDDINGS_PATH:
                return self._embeddings(body)
            return self._messages(body)
        except _RequestError as error:
            return _error(flavor, error.status, error.message)

    @staticmethod
    def _authorized(flavor: _Flavor, headers: dict[str, str]) -> bool:
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if flavor == "openai":
            return bool(bearer)
        # Anthropic's API takes x-api-key; this SDK generation sends the key as a bearer token.
        return bool(headers.get("x-api-key", "").strip() or bearer)

    # OpenAI chat ---------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> _Answer:
        model = _model_of(body)
        messages = _messages_of(body)
        limit = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
        prompt_tokens = _prompt_tokens([m.get("content") if isinstance(m, dict) else None for m in messages])
        prompt_tokens += self._extra_prompt_tokens

        tool_call: dict[str, Any] | None = None
        tools = body.get("tools")
        tool_choice = body.get("tool_choice")
        if isinstance(tools, list) and tools and tool_choice != "none" and not _last_is_tool_result(messages):
            name = self._openai_tool_name(tools, tool_choice)
            tool_call = {
                "id": f"call_{self._new_id()}",
                "type": "function",
                "function": {"name": name, "arguments": "{}"},
            }
            text = ""
            completion_tokens = _tokens(len((name + "{}").encode()))
            finish_reason = "tool_calls"
        else:
            response_format = body.get("response_format")
            json_mode = isinstance(response_format, dict) and response_format.get("type") in (
                "json_object",
                "json_schema",
            )
            text, completion_tokens, truncated = _limit_text(_answer_text(messages, json_mode=json_mode), limit)
            finish_reason = "length" if truncated else "stop"

        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        base = {
            "id": f"chatcmpl-{self._new_id()}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        answer = _Answer(status=200, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if body.get("stream") is not True:
            message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text, "refusal": None}
            if tool_call is not None:
                message["tool_calls"] = [tool_call]
            answer.payload = {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
                "service_tier": "default",
            }
            return answer

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        chunk_base = {**base, "object": "chat.completion.chunk"}
        if include_usage:
            chunk_base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**chunk_base, "choices": [choice]}

        events: list[tuple[dict[str, Any], bool]] = [
            (chunk({"role": "assistant", "content": "", "refusal": None}), False)
        ]
        if tool_call is not None:
            first = {**tool_call, "function": {"name": tool_call["function"]["name"], "arguments": ""}}
            events.append((chunk({"tool_calls": [{"index": 0, **first}]}), True))
            events.append((chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}), True))
        else:
            events.extend((chunk({"content": piece}), True) for piece in _split(text))
        events.append((chunk({}, finish_reason), False))
        if include_usage:
            events.append(({**chunk_base, "choices": [], "usage": usage}, False))
        answer.events = [(b"data: " + _json(event) + b"\n\n", is_content) for event, is_content in events]
        answer.events.append((b"data: [DONE]\n\n", False))
        answer.content_chunks = sum(1 for _, is_content in events if is_content)
        return answer

    @staticmethod
    def _openai_tool_name(tools: list[Any], tool_choice: object) -> str:
        if isinstance(tool_choice, dict):
            function = tool_choice.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                return cast(str, function["name"])
        first = tools[0]
        function = first.get("function") if isinstance(first, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _RequestError(400, "tools[0].function.name is required.")
        return name

    # OpenAI embeddings ---------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> _Answer:
        model = _model_of(body)
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and raw_input:
            # A list of strings, or of token arrays (hashed by their JSON text).
            if all(isinstance(item, int) and not isinstance(item, bool) for item in raw_input):
                inputs = [json.dumps(raw_input)]
            else:
                inputs = [item if isinstance(item, str) else json.dumps(item) for item in raw_input]
        else:
            raise _RequestError(400, "`input` must be a string or a non-empty list.")
        dimensions = _positive_int(body, "dimensions") or (
            LARGE_EMBEDDING_DIMENSIONS if "large" in model else DEFAULT_EMBEDDING_DIMENSIONS
        )
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _embedding_base64(text, dimensions) if as_base64 else list(_embedding(text, dimensions)),
            }
            for index, text in enumerate(inputs)
        ]
        tokens = sum(_tokens(len(text.encode())) for text in inputs)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _Answer(status=200, payload=payload, prompt_tokens=tokens)

    # Anthropic messages --------------------------------------------------------

    def _messages(self, body: dict[str, Any]) -> _Answer:
        model = _model_of(body)
        if body.get("max_tokens") is None:
            raise _RequestError(400, "max_tokens: Field required")
        limit = _positive_int(body, "max_tokens")
        messages = _messages_of(body)
        contents: list[object] = [m.get("content") if isinstance(m, dict) else None for m in messages]
        system = body.get("system")
        if system:
            contents.append(system)
        prompt_tokens = _prompt_tokens(contents)

        tools = body.get("tools")
        tool_choice = body.get("tool_choice")
        choice_type = tool_choice.get("type") if isinstance(tool_choice, dict) else None
        block: dict[str, Any]
        if isinstance(tools, list) and tools and choice_type != "none" and not _last_is_tool_result(messages):
            name = self._anthropic_tool_name(tools, tool_choice)
            block = {"type": "tool_use", "id": f"toolu_{self._new_id()}", "name": name, "input": {}}
            text = ""
            completion_tokens = _tokens(len((name + "{}").encode()))
            stop_reason = "tool_use"
        else:
            text, completion_tokens, truncated = _limit_text(_answer_text(messages, json_mode=False), limit)
            block = {"type": "text", "text": text}
            stop_reason = "max_tokens" if truncated else "end_turn"

        usage = {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
        message = {
            "id": f"msg_{self._new_id()}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        answer = _Answer(status=200, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if body.get("stream") is not True:
            answer.payload = message
            return answer

        start_block: dict[str, Any]
        deltas: list[dict[str, Any]]
        if block["type"] == "tool_use":
            start_block = block
            deltas = [{"type": "input_json_delta", "partial_json": "{}"}]
        else:
            start_block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _split(text)]
        events: list[tuple[dict[str, Any], bool]] = [
            (
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
                False,
            ),
            ({"type": "content_block_start", "index": 0, "content_block": start_block}, False),
            *(({"type": "content_block_delta", "index": 0, "delta": delta}, True) for delta in deltas),
            ({"type": "content_block_stop", "index": 0}, False),
            (
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": completion_tokens},
                },
                False,
            ),
            ({"type": "message_stop"}, False),
        ]
        answer.events = [
            (b"event: " + event["type"].encode() + b"\ndata: " + _json(event) + b"\n\n", is_content)
            for event, is_content in events
        ]
        answer.content_chunks = len(deltas)
        return answer

    @staticmethod
    def _anthropic_tool_name(tools: list[Any], tool_choice: object) -> str:
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "tool":
            named = tool_choice.get("name")
            if isinstance(named, str):
                return named
        first = tools[0]
        name = first.get("name") if isinstance(first, dict) else None
        if not isinstance(name, str):
            raise _RequestError(400, "tools.0.name: Field required")
        return name
