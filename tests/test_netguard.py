"""The network guard is active in this process and in subprocesses."""

import socket
import subprocess
import sys

import pytest

from tests.conftest import NetworkBlockedError


def test_connect_to_public_address_is_blocked():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlockedError):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_dns_lookup_is_blocked():
    with pytest.raises(NetworkBlockedError):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()


def test_subprocesses_are_guarded_too():
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('93.184.216.34', 80), timeout=1)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NetworkBlockedError"


def test_hub_download_fails_offline():
    from transformers import AutoConfig

    with pytest.raises(OSError):
        AutoConfig.from_pretrained("hf-internal-testing/tiny-random-LlamaForCausalLM")
