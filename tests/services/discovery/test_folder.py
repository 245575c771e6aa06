"""The folder source's reading: what is wrong with a file is named with the file and the field, and never stops it."""

from pathlib import Path

from services.discovery.folder import Folder
from tests.conftest import server_yaml

HEAD = "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\n"


def test_every_kind_of_broken_file_is_named_with_its_field_and_the_good_servers_are_served(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(server_yaml("good", "http://127.0.0.1:9/mcp"))
    (tmp_path / "not-yaml.yaml").write_text("apiVersion: [muster\nkind: MCPServer\n")
    (tmp_path / "bad-url.yaml").write_text(HEAD + "metadata: {name: bad-url}\nspec: {type: sse, url: ftp://x}\n")
    (tmp_path / "bad-meta.yml").write_text(HEAD + "metadata: oops\nspec: {type: streamable-http, url: http://x}\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "mixed.yaml").write_text(
        server_yaml("also-good", "http://127.0.0.1:9/mcp")
        + "---\n"
        + HEAD
        + "metadata: {name: no-type}\nspec: {url: http://x}\n"
    )
    (tmp_path / "twice.yaml").write_text(server_yaml("good", "http://127.0.0.1:8/mcp"))
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (tmp_path / "notes.txt").write_text("not a server")

    folder = Folder(tmp_path)
    servers = folder.read()

    assert set(servers) == {"good", "also-good"}
    assert servers["good"].spec.url == "http://127.0.0.1:9/mcp"
    errors = folder.errors
    assert set(errors) == {"not-yaml.yaml", "bad-url.yaml", "bad-meta.yml", "binary.yaml", "mixed.yaml", "twice.yaml"}
    assert errors["not-yaml.yaml"].startswith("not-yaml.yaml: not valid YAML: line 2, column 5")
    assert (
        errors["bad-url.yaml"] == "bad-url.yaml: MCPServer bad-url: spec.url: String should match pattern '^https?://'"
    )
    assert errors["bad-meta.yml"].startswith("bad-meta.yml: MCPServer ?: metadata: ")
    assert errors["binary.yaml"].startswith("binary.yaml: ")
    assert errors["mixed.yaml"] == "mixed.yaml: MCPServer no-type: spec.type: Field required"
    assert errors["twice.yaml"] == "twice.yaml: MCPServer good is defined twice; the first definition is used"


def test_a_file_that_is_fixed_is_served_and_its_error_goes(tmp_path: Path) -> None:
    broken = tmp_path / "a.yaml"
    broken.write_text("kind: MCPServer\nspec: [")
    folder = Folder(tmp_path)
    assert folder.read() == {} and "a.yaml" in folder.errors
    broken.write_text(server_yaml("a", "http://127.0.0.1:9/mcp"))
    assert folder.changed()
    assert set(folder.read()) == {"a"} and folder.errors == {}
