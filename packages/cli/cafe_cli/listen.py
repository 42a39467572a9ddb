"""The listening socket and the uvicorn server of the `cafe` commands that serve HTTP (`cafe serve`,
`cafe inspect serve`).

    sock = listen(host, port, what="`cafe serve`")        # exits 1 when the port is in use
    run_server(app, sock, what="the training service", timeout_graceful_shutdown=5)

The socket is bound here, before the app is built, so a port in use stops the command at once with
the documented exit code (1, as for any other problem found; 2 for a bad --host or --port) and a
message naming the port and the flag to change, instead of uvicorn's log line and its own code 3.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from cafe_cli.console import EXIT_PROBLEMS, fail


def listen(host: str, port: int, *, what: str) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening; exits 1 if the port is taken, 2 if it cannot be bound."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP: asyncio turns Nagle off only on sockets that say they are TCP (else a keep-alive
    # answer waits ~40 ms for the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As uvicorn does: a restart need not wait out the old connections' TIME_WAIT. On Linux this
    # still refuses a port another socket is listening on.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"--port {port}: port {port} on {host} is already in use (another {what}, or another program); "
                "stop that one or pick a free port with --port",
                EXIT_PROBLEMS,
            )
        if exc.errno == errno.EACCES:
            fail(f"--port {port}: not allowed to listen on port {port} ({reason}); pick a port above 1023 with --port")
        fail(
            f"--host {host} --port {port}: cannot listen there ({reason}); give an address of this machine with --host"
        )
    return sock


def run_server(app: Any, sock: socket.socket, *, what: str, **config: Any) -> None:
    """Serve `app` on `sock` with uvicorn until Ctrl-C or SIGTERM; exit 1 if it never started."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    except SystemExit:  # uvicorn's own exit code (3) when the app fails to start; its log says why
        if server.started:
            raise
    finally:
        sock.close()
    if not server.started:
        fail(f"{what} did not start; the error above says why", EXIT_PROBLEMS)
