"""Every option of every bundled plugin, given a value of the wrong kind, is one clear line, never a traceback.

The gateway is built in process for each (option, value): it either starts or refuses with a
:class:`ConfigError` naming the option. Any other exception is a bug in how the option is read.
"""

from __future__ import annotations

from typing import Any

import pytest

from offload.app import create_app, plugin_context
from offload.errors import ConfigError
from offload.plugins import load_enabled_plugins, new_plugin_manager
from offload.settings import parse_settings

SERVERS = ["127.0.0.1:5000"]
WRONG_VALUES: list[Any] = ["x", -1, 1.5, [], {"a": 1}, True]


def declared_options(plugin: str) -> list[str]:
    """The plugin's merged options (the core's and its own), as a user could set them."""
    settings = parse_settings({"plugins": {plugin: {"servers": SERVERS}}})
    manager = new_plugin_manager()
    load_enabled_plugins(manager, settings.enabled_plugins(), source=settings.source)
    return sorted(set(plugin_context(manager, plugin, settings).options) - {"enabled"})


CASES = [(plugin, option) for plugin in ("math", "contracts") for option in declared_options(plugin)]


@pytest.mark.parametrize(("plugin", "option"), CASES, ids=[f"{p}.{o}" for p, o in CASES])
def test_a_wrong_value_is_one_line_naming_the_option(plugin: str, option: str) -> None:
    for value in WRONG_VALUES:
        table = {"servers": SERVERS, option: value}
        try:
            create_app(parse_settings({"plugins": {plugin: table}}), api_token="t" * 32)
        except ConfigError as refused:
            message = str(refused)
            assert "\n" not in message and (option in message or "server" in message), message
