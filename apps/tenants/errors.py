class ProvisioningError(ValueError):
    """An organization cannot be created as asked; the message says why, in one line."""


class ApiKeyAttemptsExceeded(Exception):
    """Raised by the API key resolver (TENANT_API_KEY_RESOLVER) when the client address has failed
    too often; the tenant middleware answers 429 with Retry-After."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed API key attempts from this address; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s
