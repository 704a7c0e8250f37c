from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from apps.llm.platform.models import CatalogModel, ModelPrice

# The catalog changes when operators edit it; every call reads it. Kept per process for a few seconds.
_SNAPSHOT_SECONDS = 10.0


@dataclass(frozen=True)
class PricedModel:
    model: CatalogModel
    price: ModelPrice | None  # None: the model has no price and must be refused


class _Snapshot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expires = 0.0
        self._models: dict[str, PricedModel] = {}

    def get(self) -> dict[str, PricedModel]:
        if time.monotonic() < self._expires:
            return self._models
        with self._lock:
            if time.monotonic() >= self._expires:
                latest: dict[int, ModelPrice] = {}
                for price in ModelPrice.objects.order_by("model_id", "-version").distinct("model_id"):
                    latest[price.model_id] = price
                self._models = {
                    model.name: PricedModel(model=model, price=latest.get(model.pk))
                    for model in CatalogModel.objects.filter(is_active=True)
                }
                self._expires = time.monotonic() + _SNAPSHOT_SECONDS
        return self._models

    def forget(self) -> None:
        self._expires = 0.0


_snapshot = _Snapshot()


def catalog() -> dict[str, PricedModel]:
    """Active models by name, with their current price."""
    return _snapshot.get()


def catalog_forget() -> None:
    _snapshot.forget()
