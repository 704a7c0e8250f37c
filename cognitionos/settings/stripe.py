"""Stripe, through dj-stripe 2.11 (apps.billing.stripe_gateway makes every call)."""

from .env import env_int, env_str

# The organization is the Stripe customer. dj-stripe reads `email` from it (Organization.email).
DJSTRIPE_SUBSCRIBER_MODEL = "tenants.Organization"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_USE_NATIVE_JSONFIELD = True
# dj-stripe's own views (which we don't route) would find the subscriber as the request's organization.
DJSTRIPE_SUBSCRIBER_MODEL_REQUEST_CALLBACK = "apps.billing.stripe_gateway.request_subscriber"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# The customer's metadata key naming its organization (dj-stripe's default).
DJSTRIPE_SUBSCRIBER_CUSTOMER_KEY = "djstripe_subscriber"

STRIPE_LIVE_MODE = env_str("STRIPE_LIVE_MODE", "false").lower() in ("1", "true", "yes")
# One secret key (sk_test_... or sk_live_...); empty: billing through Stripe is off (plans still work).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
# dj-stripe reads these names.
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_SECRET_KEY
STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY if STRIPE_LIVE_MODE else ""
# The signing secret of the webhook endpoint (whsec_...): events without a valid signature are refused.
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
# Where the API is; only tests (the fake Stripe server) and a stripe-mock change it.
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
# Network retries of one call (connection errors, 409, 5xx), with the SDK's exponential backoff and
# the same idempotency key each time.
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 3)
# Seconds a signed webhook's timestamp may be off (Stripe's default tolerance: replays are refused).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)
