"""OAuth errors as the RFCs name them, raised by the endpoints and turned into one answer at the edge.

OAuthError                 error, description, status -> {"error": ..., "error_description": ...}
├── Redirectable           sent to the client's (verified) redirect URI with its state and muster's iss
└── (the rest)             answered to whoever asked: the redirect URI cannot be trusted, or no browser is there
"""


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class Redirectable(OAuthError):
    pass


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)
