#!/usr/bin/env python3
"""Asks a CQL server one query over the native protocol (v4) and exits 0 when it answers.

    scripts/cql_ping.py HOST PORT [QUERY]

No driver needed: STARTUP, then QUERY at consistency ONE, then the RESULT's first text cell is
printed (for the default query, the server's release version). Used by scripts/cassandra.sh to
tell "the port is open" from "CQL answers".
"""
import socket
import struct
import sys

OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed")
        out += chunk
    return out


def read_frame(sock):
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", read_exact(sock, 9))
    return opcode, read_exact(sock, length)


def first_text_cell(body):
    # RESULT kind Rows (2): metadata flags, column count, paging state?, global table spec?,
    # column specs, then row count and rows of [bytes] cells.
    (kind,) = struct.unpack(">i", body[:4])
    if kind != 2:
        return ""
    pos = 4
    flags, cols = struct.unpack(">ii", body[pos : pos + 8])
    pos += 8
    if flags & 0x0002:  # has more pages
        (n,) = struct.unpack(">i", body[pos : pos + 4])
        pos += 4 + max(n, 0)
    global_spec = flags & 0x0001
    if flags & 0x0004:  # no metadata
        return ""
    if global_spec:
        for _ in range(2):
            (n,) = struct.unpack(">H", body[pos : pos + 2])
            pos += 2 + n
    for _ in range(cols):
        if not global_spec:
            for _ in range(2):
                (n,) = struct.unpack(">H", body[pos : pos + 2])
                pos += 2 + n
        (n,) = struct.unpack(">H", body[pos : pos + 2])
        pos += 2 + n
        (type_id,) = struct.unpack(">H", body[pos : pos + 2])
        pos += 2
        if type_id == 0x0000:  # custom: a class name follows
            (n,) = struct.unpack(">H", body[pos : pos + 2])
            pos += 2 + n
    (rows,) = struct.unpack(">i", body[pos : pos + 4])
    pos += 4
    if rows == 0:
        return ""
    (n,) = struct.unpack(">i", body[pos : pos + 4])
    pos += 4
    return body[pos : pos + n].decode(errors="replace") if n >= 0 else ""


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    query = sys.argv[3] if len(sys.argv) > 3 else "SELECT release_version FROM system.local"
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(frame(1, OP_STARTUP, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
        opcode, body = read_frame(sock)
        if opcode != OP_READY:
            sys.exit(f"cql_ping: STARTUP answered opcode {opcode}: {body[6:].decode(errors='replace')}")
        q = query.encode()
        sock.sendall(frame(2, OP_QUERY, struct.pack(">i", len(q)) + q + struct.pack(">HB", 0x0001, 0)))
        opcode, body = read_frame(sock)
        if opcode == OP_ERROR:
            sys.exit(f"cql_ping: query refused: {body[6:].decode(errors='replace')}")
        if opcode != OP_RESULT:
            sys.exit(f"cql_ping: query answered opcode {opcode}")
        print(first_text_cell(body))


if __name__ == "__main__":
    main()
