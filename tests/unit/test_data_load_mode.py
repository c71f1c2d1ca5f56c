"""How node copies are filled: ``load_mode`` and the ``[data] load`` config key."""

from __future__ import annotations

import pytest

from hpcml.cv.config import load_config
from hpcml.data.shared import BROADCAST_AUTO_NODES, ENV_LOAD, load_mode
from hpcml.errors import ConfigError

CONFIG = '[data]\npath = "d.h5"\n{extra}\n[[model]]\nname = "m"\nestimator = "sklearn.svm.SVC"\n'


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_LOAD, raising=False)


def test_auto_broadcasts_from_the_documented_node_count():
    assert load_mode(None, 1) == ("read", "one node")
    assert load_mode("auto", BROADCAST_AUTO_NODES - 1)[0] == "read"
    assert load_mode("auto", BROADCAST_AUTO_NODES)[0] == "broadcast"
    assert load_mode("read", 1000)[0] == "read"
    assert load_mode("broadcast", 2) == ("broadcast", "broadcast (requested)")
    assert load_mode("broadcast", 1)[0] == "read"  # one node: nothing to broadcast to


def test_environment_sets_the_default_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv(ENV_LOAD, "broadcast")
    assert load_mode(None, 2)[0] == "broadcast"
    assert load_mode("read", 2)[0] == "read"  # an explicit choice wins
    with pytest.raises(ValueError, match="'auto', 'read', 'broadcast'"):
        load_mode("scatter", 2)


def test_config_key():
    assert load_config(CONFIG.format(extra="").encode(), "/tmp/x/s.toml").data.load is None
    cfg = load_config(CONFIG.format(extra='load = "broadcast"').encode(), "/tmp/x/s.toml")
    assert cfg.data.load == "broadcast"
    with pytest.raises(ConfigError, match=r"\[data\] load: expected one of 'auto', 'read', 'broadcast'"):
        load_config(CONFIG.format(extra='load = "all"').encode(), "/tmp/x/s.toml")
