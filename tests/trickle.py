"""A slow HTTP server for URL-fetch tests (SDK and service): it trickles a response header byte by byte."""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["TrickleServer"]


class TrickleServer:
    """A TCP server on 127.0.0.1 that answers every request with one byte of an HTTP header every ``interval_s``
    (for at most ``total_s``), and records when each connection was closed by the client."""

    def __init__(self, interval_s: float, total_s: float) -> None:
        self.interval_s = interval_s
        self.total_s = total_s
        self.closed_after: list[float] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/slow.png"

    def __enter__(self) -> TrickleServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=self.total_s + 5)

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _trickle(self, conn: socket.socket) -> None:
        start = time.monotonic()
        header = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"a" * 10_000
        with conn:
            conn.recv(65536)
            for byte in header:
                if self._stop.is_set() or time.monotonic() - start > self.total_s:
                    return
                try:
                    conn.sendall(bytes([byte]))
                    conn.settimeout(self.interval_s)
                    if conn.recv(1) == b"":  # the client shut the connection down
                        self.closed_after.append(time.monotonic() - start)
                        return
                except TimeoutError:
                    continue
                except OSError:
                    self.closed_after.append(time.monotonic() - start)
                    return
