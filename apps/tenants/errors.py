class ProvisioningError(ValueError):
    """An organization cannot be created as asked; the message says why, in one line."""
