import sys
from pathlib import Path

import pytest

from muster.container import command, environment, with_password
from shared.resp import Connection


def test_a_generated_password_is_percent_encoded_into_the_url_and_reads_back_unchanged() -> None:
    password = "a/b+c=d@e:f%"
    url = with_password("redis://muster-valkey:6379/0", password)
    assert url.startswith("redis://:") and url.endswith("@muster-valkey:6379/0")
    assert Connection(url).password == password  # what muster's own Valkey client makes of it


def test_a_url_that_names_its_password_keeps_it() -> None:
    assert with_password("redis://:own@valkey:6379/0", "other") == "redis://:own@valkey:6379/0"
    assert with_password("redis://user@valkey:6379/0", "p") == "redis://user:p@valkey:6379/0"


def test_the_password_file_wins_and_no_password_variable_reaches_the_service(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from/file")
    env = environment(
        {
            "MUSTER_VALKEY_URL": "redis://valkey:6379/0",
            "MUSTER_VALKEY_PASSWORD": "from-env",
            "MUSTER_VALKEY_PASSWORD_FILE": str(secret),
            "OTHER": "kept",
        }
    )
    assert env == {"MUSTER_VALKEY_URL": "redis://:from%2Ffile@valkey:6379/0", "OTHER": "kept"}
    assert environment({"OTHER": "kept"}) == {"OTHER": "kept"}


def test_the_first_argument_picks_the_service_and_anything_else_is_refused() -> None:
    assert command(["worker"]) == [sys.executable, "-m", "services.worker"]
    assert command(["demo", "--port", "1"])[2:] == ["demo.kubernetes", "--port", "1"]
    for wrong in ([], ["shell"], ["--help"]):
        with pytest.raises(SystemExit):
            command(wrong)
