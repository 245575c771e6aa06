"""The errors of identity, split by what the caller should do next.

    IdentityError
    ├── ReauthRequired         the user must sign in again: no tokens, or the provider refused the refresh token
    │   └── LoginRequired      a per-server login is missing; `url` is where the user starts it
    ├── ProviderUnavailable    the provider could not be reached or failed (5xx, timeout): retry later; never an
    │                          auth failure
    ├── ProviderRejected       the provider refused a request muster made (bad client credentials, bad grant
    │                          configuration): an operator must look; retrying will not help
    ├── InvalidToken           a token presented to muster failed validation (signature, issuer, audience, expiry)
    └── Unsealable             a stored value does not decrypt: unknown key id, tampered, or copied to another key

Messages never contain tokens, codes or secrets.
"""


class IdentityError(Exception):
    pass


class ReauthRequired(IdentityError):
    pass


class LoginRequired(ReauthRequired):
    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class ProviderUnavailable(IdentityError):
    pass


class ProviderRejected(IdentityError):
    pass


class InvalidToken(IdentityError):
    pass


class Unsealable(IdentityError):
    pass
