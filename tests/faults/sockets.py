"""Which addresses this process listens on, read from /proc (Linux), for the safe-default checks."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path


def _own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode(address: str, v6: bool) -> tuple[str, int]:
    host_hex, port_hex = address.split(":")
    raw = bytes.fromhex(host_hex)
    if v6:
        words = struct.unpack("<4I", raw)
        host = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    else:
        host = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host_hex, 16)))
    return host, int(port_hex, 16)


def listening_addresses() -> list[tuple[str, int]]:
    """(host, port) of every TCP socket this process has in LISTEN state."""
    mine = _own_socket_inodes()
    found = []
    for table, v6 in (("/proc/self/net/tcp", False), ("/proc/self/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in mine:
                found.append(_decode(fields[1], v6))
    return found


def exposed(addresses: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The addresses that are not loopback."""
    return [(h, p) for h, p in addresses if not (h.startswith("127.") or h in ("::1", "::ffff:127.0.0.1"))]
