from typing import Any

from django.db import models

# What a plan limits, with the value used when a plan does not say. The billing issue extends
# plans (prices, Stripe products); everything that needs "the plan" reads it from here.
DEFAULT_LIMITS: dict[str, Any] = {
    "max_members": 5,
    "max_concurrent_jobs": 2,
    "max_map_items": 100,  # items one workflow map step may fan out to
    "requests_per_minute": 60,
    "tokens_per_minute": 100_000,
    "monthly_budget_usd": "10.00",
    "semantic_cache": False,
    "sso": False,
    "custom_roles": False,  # organizations may define their own roles (apps.rbac.CustomRole)
}


class Plan(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    limits = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.name

    def limit(self, key: str) -> Any:
        if key not in DEFAULT_LIMITS:
            raise KeyError(f"Unknown plan limit {key!r}")
        return self.limits.get(key, DEFAULT_LIMITS[key])
