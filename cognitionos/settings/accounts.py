"""Accounts (allauth), outgoing mail and the portal's sign-in flow."""

from cognitionos.embedded import default_data_dir

from .env import env_bool, env_int, env_str

ACCOUNT_ADAPTER = "apps.accounts.adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
# The link in the mail signs the person in (in the browser that signed up) and lands them in the
# organization they just created.
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[CognitionOS] "
ACCOUNT_PREVENT_ENUMERATION = True
# Sign-up also creates the first organization (apps.portal.forms.SignupForm).
ACCOUNT_FORMS = {
    "signup": "apps.portal.forms.SignupForm",
    # Refused for addresses whose verified domain requires SSO (apps.sso).
    "reset_password": "apps.sso.forms.SsoAwareResetPasswordForm",
}
# Brute force: failed sign-ins and resets are limited per client address and per account (the
# email), in Redis through Django's cache, so every web process shares the counts.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reauthenticate": "10/m/user",
}
# Second factors (allauth.mfa): an authenticator app (TOTP), recovery codes, and security keys or
# passkeys (WebAuthn, through fido2). Sign-in asks for the second factor of whoever has one; an
# organization can require one of every member (apps.portal.middleware.OrganizationMfaMiddleware).
# A wrong code counts as a failed sign-in ("login_failed" above, per user: 5 in 5 minutes).
MFA_ADAPTER = "apps.accounts.adapter.MFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_TOTP_ISSUER = "CognitionOS"
MFA_RECOVERY_CODE_COUNT = 10
# "Sign in with a passkey" (no password). It counts as a sign-in with a second factor (allauth
# records it as MFA), which holds only if the authenticator verified the person (PIN, biometrics):
# user verification is required of every security key and passkey, for both uses.
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_WEBAUTHN_USER_VERIFICATION = "required"
# Browsers allow WebAuthn on http only for localhost; development serves *.localhost over http.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = env_bool("DEBUG", False)
# Counted per client address as apps.tenants.middleware.client_address does (TRUSTED_PROXY_COUNT).
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# Where a sign-in lands: /enter/ picks the organization and hands the session over to its host.
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "portal-enter"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
# A handover token (apps.portal.handover) is good for this long, once, on one host.
PORTAL_HANDOVER_SECONDS = env_int("PORTAL_HANDOVER_SECONDS", 60)

# Mail: SMTP configured by environment variables. Development and the test suite keep every
# message in a folder instead (EMAIL_BACKEND set there) and list it at /dev/mail/.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "CognitionOS <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The development mailbox page: only where a settings module turns it on (never production).
DEV_MAILBOX = False
MAILBOX_DIR = env_str("COGNITIONOS_MAILBOX_DIR", str(default_data_dir() / "mail"))

# SAML SSO (apps.sso, docs/sso.md): allauth's SAML provider, one app per organization, built from
# its IdentityProvider row by apps.sso.adapter (no SocialApp rows). The SSO flow links the person by
# their address in a verified domain itself, so allauth never matches accounts by email on its own
# and never shows its social sign-up form.
SOCIALACCOUNT_ADAPTER = "apps.sso.adapter.SsoSocialAccountAdapter"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_STORE_TOKENS = False
# A GET to an organization's /accounts/saml/<slug>/login/ shows a button that POSTs (CSRF-checked):
# a link elsewhere can't start a sign-in on someone's behalf.
SOCIALACCOUNT_LOGIN_ON_GET = False
