"""Platform-host URLs of billing (included by cognitionos.urls_public)."""

from django.urls import path

from apps.billing.views import stripe_webhook

urlpatterns = [
    path("billing/stripe/webhook/", stripe_webhook, name="stripe-webhook"),
]
