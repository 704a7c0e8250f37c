"""Outgoing HTTP (webhooks, workflow `http` steps) and webhook delivery."""

from .env import env_bool, env_int, env_list, env_str

# Requests to private, loopback, link-local (cloud metadata) and other non-public addresses are
# refused unless this is on: tests and development only.
OUTBOUND_ALLOW_PRIVATE_NETWORKS = env_bool("OUTBOUND_ALLOW_PRIVATE_NETWORKS", False)
OUTBOUND_TIMEOUT_SECONDS = env_int("OUTBOUND_TIMEOUT_SECONDS", 10)
OUTBOUND_MAX_RESPONSE_BYTES = env_int("OUTBOUND_MAX_RESPONSE_BYTES", 1024 * 1024)
# A PEM file of the certificate authorities trusted for https (empty: the certifi bundle).
OUTBOUND_CA_BUNDLE = env_str("OUTBOUND_CA_BUNDLE", "")

# Attempts per webhook delivery (the first one included), and the delay before each retry
# (the last delay repeats if there are more retries than delays); each delay gets +-25 % jitter.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_RETRY_DELAYS_SECONDS = [
    int(value)
    for value in env_list("WEBHOOK_RETRY_DELAYS_SECONDS", ["10", "60", "300", "1800", "7200", "21600", "43200"])
]
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10)
