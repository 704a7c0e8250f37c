"""What each step type does, given the values it can see. No run bookkeeping here: the service
decides when a step runs and records what it returns.

An `llm` step's answer is handed to `on_settled`, which the engine runs in the transaction that
settles the call's ledger row, so the step's record and the ledger commit together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from apps.accounts.principals import Principal
from apps.llm.calls import CallSource, ChatOutcome, LlmRefusal, chat_call_parse, chat_complete
from apps.tenants.models import Organization
from apps.workflows.definition import StepSpec, pattern_compile
from apps.workflows.templating import (
    OutputTooLarge,
    Scope,
    Template,
    TemplateError,
    bounded_text,
    text_of,
    text_size,
    utf8_size,
)

MAX_MATCH_CHARS = 100_000
_ENCODER = json.JSONEncoder(ensure_ascii=False)
MAX_HTTP_RESPONSE_BYTES = 1_000_000


class StepFailure(Exception):
    """The step failed; `error_class` is machine-readable (`budget_exceeded`, `template_error`, ...)."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


@dataclass
class StepResult:
    output: Any
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    cache: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """Who pays and how calls are named: request ids are unique per run, step, attempt (and item)."""

    organization: Organization
    principal: Principal
    request_id: str


Settled = Callable[[StepResult], None]


def _template(spec: StepSpec, name: str) -> Template:
    template = spec.template(name)
    assert template is not None, f"{spec.name}.{name} was validated"
    return template


def output_limit() -> int:
    """The most a step may render (all its templates together) and the most its output may be,
    in bytes of text."""
    return int(settings.WORKFLOW_STEP_OUTPUT_MAX_BYTES)


class _Room:
    """What a step may still render: its templates share one bound, so a step can't build more
    than it by repeating a large value across many fields either."""

    def __init__(self) -> None:
        self.limit = self.left = output_limit()

    def take(self, text: str) -> str:
        self.left -= utf8_size(text)
        return text


def too_large(what: str, limit: int) -> StepFailure:
    return StepFailure("output_too_large", f"{what} is larger than the step limit of {limit} bytes")


def output_check(output: Any) -> Any:
    """The step's output, or an `output_too_large` failure if its text passes the bound."""
    limit = output_limit()
    try:
        text_size(output, limit)
    except OutputTooLarge as error:
        raise too_large("the output", limit) from error
    return output


def _render(spec: StepSpec, name: str, scope: Scope, room: _Room) -> str:
    try:
        return room.take(_template(spec, name).render(scope, limit=room.left))
    except TemplateError as error:
        raise StepFailure("template_error", f"{name}: {error}") from error
    except OutputTooLarge as error:
        raise too_large(f"{name}: the rendered text", room.limit) from error


def _resolve(spec: StepSpec, name: str, scope: Scope, room: _Room) -> Any:
    """A single placeholder's value as it is (already in memory); other templates rendered."""
    template = _template(spec, name)
    if template.single is None:
        return _render(spec, name, scope, room)
    try:
        return template.resolve(scope)
    except TemplateError as error:
        raise StepFailure("template_error", f"{name}: {error}") from error


# -- llm ----------------------------------------------------------------------------------------------


def llm_request(spec: StepSpec, scope: Scope) -> dict[str, Any]:
    """The chat request of an llm step (before an agent's defaults are applied)."""
    config = spec.config
    room = _Room()
    messages = []
    if spec.template("system") is not None:
        messages.append({"role": "system", "content": _render(spec, "system", scope, room)})
    messages.append({"role": "user", "content": _render(spec, "prompt", scope, room)})
    body: dict[str, Any] = {"messages": messages}
    for name in ("model", "policy", "max_tokens", "temperature", "min_quality"):
        if config.get(name) is not None:
            body[name] = config[name]
    if config.get("max_cost_usd") is not None:
        body["max_cost_usd"] = str(config["max_cost_usd"])
    return body


def _llm_result(outcome: ChatOutcome) -> StepResult:
    choice = (outcome.body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = outcome.body.get("usage") or {}
    return StepResult(
        output=message.get("content") or "",
        cost_usd=outcome.cost_usd,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        model=outcome.model,
        cache=outcome.cache,
        details={"finish_reason": choice.get("finish_reason"), "request_id": outcome.request_id},
    )


def run_llm(context: StepContext, body: dict[str, Any], on_settled: Settled) -> StepResult:
    """One governed engine call; `on_settled` records the result with the ledger row."""
    try:
        outcome = chat_complete(
            organization=context.organization,
            principal=context.principal,
            call=chat_call_parse(body),
            request_id=context.request_id,
            on_settled=lambda settled: on_settled(_llm_result(settled)),
            source=CallSource.WORKFLOW_STEP,
        )
    except LlmRefusal as error:
        raise StepFailure(error.code, error.message) from error
    return _llm_result(outcome)


# -- retrieve -----------------------------------------------------------------------------------------


def run_retrieve(context: StepContext, spec: StepSpec, scope: Scope) -> StepResult:
    """The knowledge base's best chunks for the rendered query (apps.knowledge.search): the query's
    embedding is a governed call in the ledger under the step's request id."""
    from apps.knowledge.search import (
        KnowledgeSearchInvalid,
        knowledge_base_find,
        knowledge_base_of_legacy_documents,
        knowledge_search,
    )

    query = _render(spec, "query", scope, _Room())
    if not query.strip():
        raise StepFailure("empty_query", "the query rendered to an empty string")
    reference = spec.config.get("knowledge_base")
    if reference is None:
        # Saved before knowledge bases: its documents are in the knowledge base they were moved to.
        base = knowledge_base_of_legacy_documents(document_ids=spec.config.get("documents") or [])
    else:
        base = knowledge_base_find(reference=reference)
    if base is None:
        raise StepFailure("knowledge_base_not_found", f"no knowledge base {reference!r} in this organization")
    try:
        found = knowledge_search(
            organization=context.organization,
            principal=context.principal,
            knowledge_base=base,
            query=query,
            top_k=int(spec.config.get("top_k") or 4),
            mode=spec.config.get("mode") or "hybrid",
            request_id=context.request_id,
        )
    except LlmRefusal as error:
        raise StepFailure(error.code, error.message) from error
    except KnowledgeSearchInvalid as error:
        raise StepFailure(error.code, f"{error.param}: {error}") from error
    output = [
        {
            "text": hit.text,
            "document_id": str(hit.document_id),
            "document_title": hit.document_title,
            "ordinal": hit.ordinal,
            "heading_path": hit.heading_path,
            "score": hit.score,
            "vector_score": hit.vector_score,
            "text_rank": hit.text_rank,
        }
        for hit in found.hits
    ]
    return StepResult(output=output, cost_usd=found.cost_usd, model=found.model or "")


# -- transform ----------------------------------------------------------------------------------------


def run_transform(spec: StepSpec, scope: Scope) -> StepResult:
    room = _Room()
    if "template" in spec.config:
        return StepResult(output=output_check(_resolve(spec, "template", scope, room)))
    value = _resolve(spec, "value", scope, room)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise StepFailure("invalid_json", f"value is text that is not JSON: {error}") from error
    try:
        expression = jsonpath_parse(spec.config["jsonpath"])
        matches = [match.value for match in expression.find(value)]
    except (JSONPathError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise StepFailure("jsonpath_error", f"jsonpath: {error}") from error
    # The matches can repeat parts of the value (`$..*`): their text can be far larger than it.
    if spec.config.get("first"):
        return StepResult(output=output_check(matches[0] if matches else None))
    return StepResult(output=output_check(matches))


# -- condition ----------------------------------------------------------------------------------------


def condition_test(config: Any, value: Any) -> bool:  # noqa: PLR0911 - one answer per kind of test
    if "equals" in config:
        expected = config["equals"]
        if isinstance(value, str) and isinstance(expected, str):
            return value.strip() == expected
        return bool(value == expected)
    if "contains" in config:
        expected = config["contains"]
        if isinstance(value, list):
            return expected in value
        if isinstance(value, dict):
            return isinstance(expected, str) and expected in value
        if isinstance(value, str):
            return text_of(expected) in value
        return False
    # RE2: linear in the text whatever the pattern (see pattern_compile).
    return pattern_compile(config["matches"]).search(_match_text(value)) is not None


def _match_text(value: Any) -> str:
    """The first MAX_MATCH_CHARS characters of the value's text, without writing the rest."""
    if isinstance(value, str):
        return value[:MAX_MATCH_CHARS]
    chunks: list[str] = []
    size = 0
    for chunk in _ENCODER.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_MATCH_CHARS:
            break
    return "".join(chunks)[:MAX_MATCH_CHARS]


def run_condition(spec: StepSpec, scope: Scope) -> StepResult:
    return StepResult(output=condition_test(spec.config, _resolve(spec, "value", scope, _Room())))


# -- http ---------------------------------------------------------------------------------------------


def _body(spec: StepSpec, scope: Scope, value: Any, path: str, room: _Room) -> Any:
    if isinstance(value, str):
        return _resolve(spec, path, scope, room)
    if isinstance(value, dict):
        return {key: _body(spec, scope, item, f"{path}.{key}", room) for key, item in value.items()}
    if isinstance(value, list):
        return [_body(spec, scope, item, f"{path}.{index}", room) for index, item in enumerate(value)]
    return value


def run_http(spec: StepSpec, scope: Scope) -> StepResult:
    from cognitionos.safehttp import OutboundError, OutboundRefused, outbound_request

    config = spec.config
    room = _Room()
    url = _render(spec, "url", scope, room)
    headers = {name: _render(spec, f"headers.{name}", scope, room) for name in config.get("headers") or {}}
    content: str | None = None
    raw_body = config.get("body")
    if isinstance(raw_body, str):
        content = _render(spec, "body", scope, room)
    elif raw_body is not None:
        # A field that is one placeholder holds the value itself (no copy); many fields naming one
        # large value would still write it many times, so the JSON text is bounded as it is written.
        payload = _body(spec, scope, raw_body, "body", room)
        try:
            content = bounded_text(payload, room.limit)
        except OutputTooLarge as error:
            raise too_large("body: the rendered JSON", room.limit) from error
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    try:
        response = outbound_request(
            method=str(config.get("method", "GET")).upper(),
            url=url,
            headers=headers,
            content=content,
            timeout_s=float(config.get("timeout_s") or 10),
            max_response_bytes=MAX_HTTP_RESPONSE_BYTES,
        )
    except OutboundRefused as error:
        raise StepFailure("http_refused", f"the request was not sent: {error}") from error
    except OutboundError as error:
        raise StepFailure("http_error", f"the request failed: {error}") from error
    text = response.text()
    if response.status_code >= 400:
        raise StepFailure("http_status", f"the server answered {response.status_code}: {text[:200]}")
    body: Any = text
    if "json" in response.headers.get("content-type", "") and not response.truncated:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    return StepResult(output={"status": response.status_code, "body": body})
