"""A TCP proxy on a loopback port that can refuse connections and come back.

For a store that goes away and returns with what it held: moto keeps its objects in
its process's memory, so a killed moto server (tests.s3server) comes back empty. A
client of the proxy sees what a client of a killed server sees (refused connections,
open ones cut), while the server behind keeps running.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from tests.processes import free_port


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target = target_port
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.refuse()

    def restore(self) -> None:
        """Listen (again) on the same port."""
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)  # so that refuse() is noticed without a connection
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def refuse(self) -> None:
        """Stop listening and cut every open connection: new ones are refused."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        assert self._accepting is not None
        self._accepting.join()
        listener.close()
        with self._lock:
            cut, self._open = self._open, []
        for sock in cut:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            target.sendall(data)
    except OSError:
        pass  # cut by refuse(), or the other side closed
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
