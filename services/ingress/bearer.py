"""The bearer check of /mcp, once per request: who the request is for, or the 401/403 that answers it instead
(the authorization server's ResourceGuard decides; this turns its answer into what the endpoint needs). The
per-request protocol (2026-07-28) carries its token on every request and is checked the same way."""

from dataclasses import dataclass

from services.ingress.http import JSON, Head, Send, respond
from services.ingress.oauth.resource import Denial, ResourceGuard


@dataclass(frozen=True, slots=True)
class Who:
    """Whose request this is: the owner of the sessions it may use, and the login its calls run with."""

    owner: str  # the token's subject; "anonymous" with auth off
    login: bytes  # Call.login: the muster login (or forwarded token) whose upstream tokens the worker uses


ANONYMOUS = Who("anonymous", b"")


class Bearer:
    def __init__(self, guard: ResourceGuard) -> None:
        self.guard = guard

    async def who(self, head: Head) -> Who | Denial:
        outcome = await self.guard.check(head.raw)
        if isinstance(outcome, Denial):
            return outcome
        return Who(outcome.subject, (outcome.family or "").encode())


async def deny(send: Send, denial: Denial) -> None:
    headers = [(name, value) for name, value in denial.headers if name != b"content-type"]
    await respond(send, denial.status, denial.body, JSON, headers)
