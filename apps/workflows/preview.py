"""What a run would cost, before running it: expected and worst case per step, from the catalog's
prices, next to what the organization's budgets have left.

Worst case is what the engine would reserve: every prompt byte counted as a token (no token is
shorter than a byte), the answer at `max_tokens` (or the model's ceiling), the most expensive model
a policy or fallback chain could pick, every branch taken. Expected assumes about four bytes per
token and answers of EXPECTED_OUTPUT_TOKENS (or less when `max_tokens` says so), on the model the
router would pick now. Input fields the preview is not given, and outputs of non-llm steps, are
sized by the constants below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.accounts.principals import Principal
from apps.agents.selectors import agent_find
from apps.billing.selectors import plan_limit
from apps.llm.calls import LlmRefusal, budget_statuses, chat_cost_preview, embedding_cost_preview
from apps.tenants.models import Organization
from apps.workflows.definition import Definition, StepSpec
from apps.workflows.templating import Placeholder, Reference, Scope, Template, TemplateError, text_of

EXPECTED_OUTPUT_TOKENS = 300
BYTES_PER_TOKEN = 4
UNKNOWN_INPUT_BYTES = 1000
RETRIEVED_CHUNK_BYTES = 1500
HTTP_OUTPUT_BYTES = 2000
MESSAGE_OVERHEAD_TOKENS = 8
CENTS = Decimal("0.00000001")


@dataclass(frozen=True)
class _Size:
    """How large a step's output (or a rendered template) is expected to be, and at most, in bytes."""

    expected: int
    worst: int

    def __add__(self, other: _Size) -> _Size:
        return _Size(self.expected + other.expected, self.worst + other.worst)

    def times(self, count: int) -> _Size:
        return _Size(self.expected * count, self.worst * count)


@dataclass
class _StepCost:
    expected: Decimal
    worst: Decimal
    output: _Size
    detail: dict[str, Any]


def _order(definition: Definition) -> list[StepSpec]:
    done: set[str] = set()
    ordered: list[StepSpec] = []
    while len(ordered) < len(definition.steps):
        for step in definition.steps:
            if step.name not in done and step.depends_on <= done:
                ordered.append(step)
                done.add(step.name)
    return ordered


class _Estimator:
    def __init__(self, principal: Principal, data: dict[str, Any] | None, max_map_items: int | None) -> None:
        self.principal = principal
        self.input = data
        self.max_map_items = max_map_items
        self.sizes: dict[str, _Size] = {}
        self.assumptions: set[str] = set()

    def _value_size(self, reference: Reference, item: Any) -> _Size:
        root = reference.path[0]
        if root == "steps":
            return self.sizes.get(reference.path[1], _Size(0, 0))
        if root == "index":
            return _Size(4, 4)
        try:
            if root == "input" and self.input is not None:
                value = Scope(input=self.input, outputs={}).lookup(reference)
            elif root == "item" and item is not None:
                value = Scope(input={}, outputs={}).with_item(item, 0).lookup(reference)
            else:
                raise TemplateError("unknown")
        except TemplateError:
            self.assumptions.add(f"an input value the preview was not given counts as {UNKNOWN_INPUT_BYTES} bytes")
            return _Size(UNKNOWN_INPUT_BYTES, UNKNOWN_INPUT_BYTES)
        size = len(text_of(value).encode())
        return _Size(size, size)

    def _placeholder_size(self, placeholder: Placeholder, item: Any) -> _Size:
        sizes = [self._value_size(reference, item) for reference in placeholder.references]
        if not sizes:
            return _Size(0, 0)
        return _Size(sizes[0].expected, max(size.worst for size in sizes))

    def template_size(self, template: Template | None, item: Any = None) -> _Size:
        total = _Size(0, 0)
        if template is None:
            return total
        for part in template.parts:
            if isinstance(part, str):
                total += _Size(len(part.encode()), len(part.encode()))
            else:
                total += self._placeholder_size(part, item)
        return total

    # -- step types ----------------------------------------------------------------------------------

    def _config(self, spec: StepSpec) -> tuple[dict[str, Any], str]:
        """The step's model settings over its agent's defaults, or what is wrong."""
        config = dict(spec.config)
        if config.get("agent") is not None:
            agent = agent_find(reference=config["agent"])
            if agent is None:
                return config, f"no agent {config['agent']!r}"
            if "model" not in config and "policy" not in config:
                config["model" if agent.model else "policy"] = agent.model or agent.policy
                config.setdefault("min_quality", agent.min_quality)
            if config.get("max_tokens") is None and agent.max_tokens is not None:
                config["max_tokens"] = agent.max_tokens
        return config, ""

    def llm(self, spec: StepSpec, item: Any = None) -> _StepCost:
        prompt = self.template_size(spec.template("prompt"), item) + self.template_size(spec.template("system"), item)
        config, problem = self._config(spec)
        if problem:
            return _StepCost(Decimal(0), Decimal(0), _Size(0, 0), {"error": problem})
        expected_in = math.ceil(prompt.expected / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS
        max_tokens = config.get("max_tokens")
        try:
            cost = chat_cost_preview(
                model=config.get("model"),
                policy=config.get("policy"),
                min_quality=int(config.get("min_quality") or 1),
                max_tokens=int(max_tokens) if max_tokens is not None else None,
                expected_input_tokens=expected_in,
                worst_input_tokens=prompt.worst + MESSAGE_OVERHEAD_TOKENS,
                expected_output_tokens=EXPECTED_OUTPUT_TOKENS,
                routing_prompt_tokens=1000,
            )
        except LlmRefusal as refusal:
            if refusal.code == "model_not_found":
                problem = f"unknown model {config.get('model')!r}"
            else:
                problem = "no priced model can serve this step"
            return _StepCost(Decimal(0), Decimal(0), _Size(0, 0), {"error": problem})
        return _StepCost(
            cost.expected_usd,
            cost.worst_usd,
            _Size(cost.expected_output_tokens * BYTES_PER_TOKEN, cost.worst_output_tokens * BYTES_PER_TOKEN),
            {
                "model": cost.model,
                "worst_case_model": cost.worst_model,
                "expected_tokens": {"input": cost.expected_input_tokens, "output": cost.expected_output_tokens},
                "worst_case_tokens": {"input": cost.worst_input_tokens, "output": cost.worst_output_tokens},
            },
        )

    def retrieve(self, spec: StepSpec, item: Any = None) -> _StepCost:
        query = self.template_size(spec.template("query"), item)
        top_k = int(spec.config.get("top_k") or 4)
        output = _Size(top_k * RETRIEVED_CHUNK_BYTES, top_k * RETRIEVED_CHUNK_BYTES)
        self.assumptions.add(f"a retrieved chunk counts as {RETRIEVED_CHUNK_BYTES} bytes")
        try:
            cost = embedding_cost_preview(
                expected_input_tokens=math.ceil(query.expected / BYTES_PER_TOKEN), worst_input_tokens=query.worst
            )
        except LlmRefusal:
            return _StepCost(Decimal(0), Decimal(0), output, {"error": "no embedding model is available"})
        return _StepCost(cost.expected_usd, cost.worst_usd, output, {"model": cost.model})

    def free(self, spec: StepSpec, item: Any = None) -> _StepCost:
        if spec.type == "transform":
            output = self.template_size(spec.template("template") or spec.template("value"), item)
        elif spec.type == "condition":
            output = _Size(5, 5)
        else:
            self.assumptions.add(f"an http answer counts as {HTTP_OUTPUT_BYTES} bytes")
            output = _Size(HTTP_OUTPUT_BYTES, HTTP_OUTPUT_BYTES)
        return _StepCost(Decimal(0), Decimal(0), output, {})

    def one(self, spec: StepSpec, item: Any = None) -> _StepCost:
        if spec.type == "llm":
            return self.llm(spec, item)
        if spec.type == "retrieve":
            return self.retrieve(spec, item)
        return self.free(spec, item)

    def map(self, spec: StepSpec) -> _StepCost:
        assert spec.inner is not None
        items: list[Any] | None = None
        template = spec.template("items")
        if self.input is not None and template is not None:
            try:
                resolved = template.resolve(Scope(input=self.input, outputs={}))
                items = resolved if isinstance(resolved, list) else None
            except TemplateError:
                items = None
        if items is not None and self.max_map_items is not None and len(items) > self.max_map_items:
            # The run would fail this step before any item runs (`map_too_large`): it costs nothing,
            # and the preview does not size thousands of items either.
            error = f"map_too_large: {len(items)} items, more than the plan's max_map_items of {self.max_map_items}"
            return _StepCost(Decimal(0), Decimal(0), _Size(0, 0), {"error": error, "items": len(items)})
        if items is None:
            self.assumptions.add("a map whose items are not in the preview's input counts as one item")
            inner = self.one(spec.inner)
            count = 1
        else:
            count = len(items)
            costs = [self.one(spec.inner, item) for item in items] or [self.one(spec.inner)]
            inner = _StepCost(
                sum((cost.expected for cost in costs), Decimal(0)) / max(count, 1),
                max(cost.worst for cost in costs),
                costs[0].output,
                costs[0].detail,
            )
        detail = {**inner.detail, "items": count if items is not None else None}
        return _StepCost(inner.expected * count, inner.worst * count, inner.output.times(count), detail)


def _budgets(principal: Principal) -> list[dict[str, Any]]:
    """The organization's budgets that apply to the principal, with what their current period has left."""
    scopes = {("organization", "")}
    if principal.kind == "api_key" and principal.id:
        scopes.add(("key", principal.id))
    if principal.kind in ("user", "operator") and principal.id:
        scopes.add(("user", principal.id))
    return [
        {
            "scope": status.budget.scope,
            "period": status.budget.period,
            "hard": status.budget.hard,
            "limit_usd": str(status.budget.limit_usd),
            "spent_usd": str(status.spent_usd),
            "reserved_usd": str(status.reserved_usd),
            "remaining_usd": str(status.remaining_usd),
        }
        for status in budget_statuses()
        if (status.budget.scope, status.budget.scope_id) in scopes
    ]


def workflow_cost_preview(
    *,
    principal: Principal,
    definition: Definition,
    data: dict[str, Any] | None = None,
    organization: Organization | None = None,
) -> dict[str, Any]:
    """Expected and worst-case cost of a run, per step and in all, and the budgets it would draw on.
    With the organization, a map over more items than its plan allows shows the error a run would
    meet."""
    limit = plan_limit(organization, "map_items") if organization is not None else None
    estimator = _Estimator(principal, data, limit)
    steps: list[dict[str, Any]] = []
    expected_total = worst_total = Decimal(0)
    for spec in _order(definition):
        cost = estimator.map(spec) if spec.type == "map" else estimator.one(spec)
        estimator.sizes[spec.name] = cost.output
        expected_total += cost.expected
        worst_total += cost.worst
        steps.append(
            {
                "name": spec.name,
                "type": spec.type,
                "expected_usd": str(cost.expected.quantize(CENTS)),
                "worst_case_usd": str(cost.worst.quantize(CENTS)),
                **cost.detail,
            }
        )
    budgets = _budgets(principal)
    remaining = [Decimal(budget["remaining_usd"]) for budget in budgets if budget["hard"]]
    room = min(remaining) if remaining else None
    order = {step.name: step.index for step in definition.steps}
    return {
        "currency": "USD",
        "expected_usd": str(expected_total.quantize(CENTS)),
        "worst_case_usd": str(worst_total.quantize(CENTS)),
        "steps": sorted(steps, key=lambda step: order[step["name"]]),
        "budgets": budgets,
        "fits": {
            "expected": room is None or expected_total <= room,
            "worst_case": room is None or worst_total <= room,
        },
        "assumptions": sorted(estimator.assumptions),
    }
