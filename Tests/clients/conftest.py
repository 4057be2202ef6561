"""Shared set-up for the client tests: the server's URL, and a guard against any network access.

run.sh starts `apus serve` and sets APUS_URL; to run the tests against a server of your own:
    APUS_URL=http://127.0.0.1:8080 .venv-clients/bin/python -m pytest Tests/clients
"""

import ipaddress
import os
import socket

import pytest

# Before huggingface_hub is imported (it reads these once, at import).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# huggingface_hub 2.x refuses every request in offline mode, a local server's included.
if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no", "off"):
    raise pytest.UsageError("unset HF_HUB_OFFLINE: huggingface_hub 2.x then refuses requests to the local server too")


def _is_loopback(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local host
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkAccessAttempted(RuntimeError):
    pass


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fails any test whose client resolves or connects to anything but loopback (hub look-ups,
    telemetry, ...). Both clients, sync and async, go through socket.getaddrinfo and socket.connect."""
    attempts = []  # also caught when a client swallows the exception (e.g. a background thread)
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            attempts.append(f"getaddrinfo({host!r})")
            raise NetworkAccessAttempted(f"name lookup of {host!r}: the tests must not reach the network")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect({address!r})")
            raise NetworkAccessAttempted(f"connection to {address!r}: the tests must not reach the network")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect = real_connect
        socket.socket.connect_ex = real_connect_ex
    assert not attempts, f"network access attempted during the tests: {attempts}"


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("APUS_URL")
    if not value:
        pytest.fail("APUS_URL is not set: run Tests/clients/run.sh (it starts the server)")
    return value.rstrip("/")


@pytest.fixture(autouse=True)
def no_openai_env(monkeypatch):
    """No OPENAI_* variable (base URL, key, organization, project, custom headers, ...) may steer
    the openai client away from the server under test or add headers (every test)."""
    for name in list(os.environ):
        if name.startswith("OPENAI_"):
            monkeypatch.delenv(name)


OPENAI_TIMEOUT = 120  # seconds; a busy 2-core machine


def openai_client(url, **kwargs):
    """An openai.OpenAI for the server: no retries (its default retries 408/409/429/5xx twice, with
    back-off, which would hide the status under test), a generous timeout."""
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=OPENAI_TIMEOUT, **kwargs)


@pytest.fixture
def oai(url):
    client = openai_client(url)
    yield client
    client.close()


def pytest_report_header(config):
    from importlib.metadata import version

    names = ["text-generation", "huggingface_hub", "openai", "requests", "aiohttp", "httpx2", "pydantic"]
    return "clients: " + ", ".join(f"{name} {version(name)}" for name in names)
