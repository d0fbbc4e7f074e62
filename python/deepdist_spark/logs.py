"""Executors' output, streamed from the Spark tasks back to `run()`'s log.

The distributor listens on a TCP port of the Spark driver's host; each task
connects, proves the run's secret on its first line, and sends its
executor's lines as they come. A task that cannot reach the port still
prints its lines to its own Spark task log.
"""

import hmac
import socket
import threading


class LogRelay:
    """Accepts tasks' connections and hands every line they send to `log`."""

    def __init__(self, secret, log, host=""):
        self.secret, self.log = secret, log
        self.server = socket.create_server((host, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn, conn.makefile("r", encoding="utf-8", errors="replace") as lines:
            first = lines.readline().rstrip("\n")
            if not hmac.compare_digest(first, self.secret):
                return
            for line in lines:
                self.log(line.rstrip("\n"))

    def close(self):
        self.server.close()


def connect(address, secret):
    """A task's writer to the relay at `address` (host, port), or None."""
    try:
        sock = socket.create_connection(address, timeout=10)
    except OSError:
        return None
    writer = sock.makefile("w", encoding="utf-8")
    writer.write(secret + "\n")
    writer.flush()
    return writer
