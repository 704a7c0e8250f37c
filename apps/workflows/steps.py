"""What each step type does, given the values it can see. No run bookkeeping here: the service
decides when a step runs and records what it returns.

An `llm` step's answer is handed to `on_settled`, which the engine runs in the transaction that
settles the call's ledger row, so the step's record and the ledger commit together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from apps.accounts.principals import Principal
from apps.llm.engine import ChatOutcome, GatewayError, chat_call_parse, chat_complete
from apps.tenants.models import Organization
from apps.workflows.definition import StepSpec
from apps.workflows.templating import Scope, Template, TemplateError, text_of

MAX_MATCH_CHARS = 100_000
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


def _render(spec: StepSpec, name: str, scope: Scope) -> str:
    try:
        return _template(spec, name).render(scope)
    except TemplateError as error:
        raise StepFailure("template_error", f"{name}: {error}") from error


def _resolve(spec: StepSpec, name: str, scope: Scope) -> Any:
    try:
        return _template(spec, name).resolve(scope)
    except TemplateError as error:
        raise StepFailure("template_error", f"{name}: {error}") from error


# -- llm ----------------------------------------------------------------------------------------------


def llm_request(spec: StepSpec, scope: Scope) -> dict[str, Any]:
    """The chat request of an llm step (before an agent's defaults are applied)."""
    config = spec.config
    messages = []
    if spec.template("system") is not None:
        messages.append({"role": "system", "content": _render(spec, "system", scope)})
    messages.append({"role": "user", "content": _render(spec, "prompt", scope)})
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
        )
    except GatewayError as error:
        raise StepFailure(error.code, error.message) from error
    return _llm_result(outcome)


# -- retrieve -----------------------------------------------------------------------------------------


def run_retrieve(context: StepContext, spec: StepSpec, scope: Scope) -> StepResult:
    from apps.knowledge.selectors import chunks_search

    query = _render(spec, "query", scope)
    if not query.strip():
        raise StepFailure("empty_query", "the query rendered to an empty string")
    try:
        found = chunks_search(
            organization=context.organization,
            principal=context.principal,
            query=query,
            top_k=int(spec.config.get("top_k") or 4),
            document_ids=spec.config.get("documents"),
            request_id=context.request_id,
        )
    except GatewayError as error:
        raise StepFailure(error.code, error.message) from error
    return StepResult(output=found.chunks, cost_usd=found.cost_usd, model=found.model)


# -- transform ----------------------------------------------------------------------------------------


def run_transform(spec: StepSpec, scope: Scope) -> StepResult:
    if "template" in spec.config:
        return StepResult(output=_resolve(spec, "template", scope))
    value = _resolve(spec, "value", scope)
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
    if spec.config.get("first"):
        return StepResult(output=matches[0] if matches else None)
    return StepResult(output=matches)


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
    return re.search(config["matches"], text_of(value)[:MAX_MATCH_CHARS]) is not None


def run_condition(spec: StepSpec, scope: Scope) -> StepResult:
    return StepResult(output=condition_test(spec.config, _resolve(spec, "value", scope)))


# -- http ---------------------------------------------------------------------------------------------


def _body(spec: StepSpec, scope: Scope, value: Any, path: str) -> Any:
    if isinstance(value, str):
        return _resolve(spec, path, scope)
    if isinstance(value, dict):
        return {key: _body(spec, scope, item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_body(spec, scope, item, f"{path}.{index}") for index, item in enumerate(value)]
    return value


def run_http(spec: StepSpec, scope: Scope) -> StepResult:
    from apps.webhooks.safehttp import OutboundError, OutboundRefused, outbound_request

    config = spec.config
    url = _render(spec, "url", scope)
    headers = {name: _render(spec, f"headers.{name}", scope) for name in config.get("headers") or {}}
    content: str | None = None
    raw_body = config.get("body")
    if isinstance(raw_body, str):
        content = _render(spec, "body", scope)
    elif raw_body is not None:
        content = json.dumps(_body(spec, scope, raw_body, "body"), ensure_ascii=False)
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
