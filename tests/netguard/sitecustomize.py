"""Loaded by every Python subprocess the tests start (PYTHONPATH points here): no network.

Only loopback and Unix sockets are allowed (torch.distributed's gloo backend talks over
loopback in the multi-process tests); anything else raises.
"""

import os
import socket

_ALLOWED_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # AF_UNIX path
    host = address[0] if isinstance(address, tuple) and address else address
    return str(host) in _ALLOWED_HOSTS or str(host).startswith("127.")


class NetworkBlockedError(OSError):
    """Raised when test code tries to reach the network."""


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")
    return _original_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")
    return _original_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_local((host if isinstance(host, str) else host.decode(),)):
        raise NetworkBlockedError(f"network access blocked in tests: resolve {host!r}")
    return _original_getaddrinfo(host, *args, **kwargs)


_original_getaddrinfo = socket.getaddrinfo

if os.environ.get("MMALIGN_NETGUARD", "1") != "0":
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo
