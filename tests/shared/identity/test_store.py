"""Tokens: when they are due for a refresh."""

from shared.identity.store import Tokens

NOW = 1_000_000.0


def tokens(life: float, obtained: float = NOW) -> Tokens:
    return Tokens(issuer="https://dex", access_token="a", expires_at=NOW + life, obtained_at=obtained)


def test_tokens_are_refreshed_the_margin_before_they_expire() -> None:
    assert tokens(3600).refresh_at(300) == NOW + 3300
    assert not tokens(3600).expiring(300, now=NOW + 3299) and tokens(3600).expiring(300, now=NOW + 3300)


def test_tokens_that_live_shorter_than_the_margin_are_refreshed_at_half_their_life_not_on_every_use() -> None:
    short = tokens(120)
    assert short.refresh_at(300) == NOW + 60
    assert not short.expiring(300, now=NOW + 1)


def test_tokens_stored_without_their_issue_time_keep_the_plain_margin() -> None:
    assert tokens(120, obtained=0.0).refresh_at(300) == NOW - 180
