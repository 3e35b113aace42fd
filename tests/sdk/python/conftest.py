"""Starts the real llmop binary for the SDK tests; the SDKs talk to it over loopback."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def start(config):
    """Starts a gateway on `config`; returns (process, base URL)."""
    binary = os.environ.get("LLMOP_BIN", str(ROOT / "target" / "debug" / "llmop"))
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline().strip()
    prefix = "llmop listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise RuntimeError(f"llmop did not start: {line!r}")
    return proc, line[len(prefix):]


@pytest.fixture(scope="session")
def gateway_config(tmp_path_factory):
    # A copy in a temporary directory: the record store (llmop.db, relative to the
    # config) lands there, not in the repository.
    config = tmp_path_factory.mktemp("llmop") / "llmop.toml"
    shutil.copy(ROOT / "tests" / "sdk" / "llmop-sdk.toml", config)
    return config


@pytest.fixture(scope="session")
def gateway_url(gateway_config):
    proc, url = start(gateway_config)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="session")
def second_gateway_url(gateway_config, gateway_url):
    """Another replica sharing the first one's record store (the same SQLite file)."""
    proc, url = start(gateway_config)
    yield url
    proc.terminate()
    proc.wait(timeout=15)
