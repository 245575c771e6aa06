from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.naming import PrefixMode
from shared.settings import ServiceSettings


class DiscoverySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_DISCOVERY_")
    shared_names: ClassVar[frozenset[str]] = ServiceSettings.shared_names | {"servers", "prefix_mode"}

    servers: Path = Path("demo/servers")  # the folder of MCPServer YAML files
    prefix_mode: PrefixMode = "always"
    poll_seconds: float = Field(0.25, gt=0)  # how often the folder is checked for changes
    refresh_seconds: float = Field(30.0, gt=0)  # how often each server is listed again (and so health-checked)
    retry_max_seconds: float = Field(30.0, gt=0)  # backoff cap for a server that cannot be reached
    grace_seconds: float = Field(30.0, ge=0)  # a failing server keeps its tools this long, so agents see no flap
    list_timeout: float = Field(10.0, gt=0)
    leader_ttl_seconds: float = Field(10.0, gt=0)
