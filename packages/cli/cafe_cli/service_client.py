"""What `cafe jobs` and `cafe schedules` share: the service's address and token, and calls to it (httpx).

The address is `--url` or CAFE_SERVICE_URL (default http://127.0.0.1:8780), the token `--token` or
CAFE_SERVICE_TOKEN. Errors end the command: 2 when the service is unreachable, the token is missing
or wrong, or the request is refused (the service's message names the field); 1 for a job or schedule
that does not exist, or a job that has already ended.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cafe_cli.console import EXIT_PROBLEMS, EXIT_USAGE, fail

if TYPE_CHECKING:
    import httpx

URL_ENV = "CAFE_SERVICE_URL"
TOKEN_ENV = "CAFE_SERVICE_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8780"
TIMEOUT_S = 30.0
LOG_RECONNECTS = 3

UrlOption = Annotated[str, typer.Option("--url", envvar=URL_ENV, help=f"the service's address (or {URL_ENV})")]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar=TOKEN_ENV, help=f"the service's bearer token (or {TOKEN_ENV})")
]


class ServiceClient:
    """Calls to the training service; every failure ends the command with a message and an exit code."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            fail(f"--token: give the service's token (the one `cafe serve` was started with), or set {TOKEN_ENV}")
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {token}"}, timeout=httpx.Timeout(TIMEOUT_S)
        )

    def _unreachable(self, exc: Exception) -> NoReturn:
        fail(
            f"cannot reach the training service at {self.url} ({exc}); start it with `cafe serve`, "
            f"or point --url (or {URL_ENV}) at it"
        )

    def _refused(self, response: httpx.Response) -> NoReturn:
        try:
            body = response.json()
            message = body.get("error") or response.text
        except ValueError:
            body, message = {}, response.text
        problems = [p["error"] for p in body.get("problems", [])[1:] if isinstance(p, dict)]
        if problems:
            message += "".join(f"\n  also: {p}" for p in problems)
        code = EXIT_PROBLEMS if response.status_code in (404, 409) else EXIT_USAGE
        fail(f"{message} (HTTP {response.status_code})", code)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a request that succeeded."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self._unreachable(exc)
        if response.status_code >= 400:
            self._refused(response)
        return response.json()

    def stream_log(self, job_id: int, *, follow: bool) -> None:
        """Write the job's log to stdout as it comes; reconnect from where it stopped a few times."""
        import httpx

        received, attempts = 0, 0
        params = {"follow": str(follow).lower()}
        while True:
            try:
                with self.http.stream(
                    "GET",
                    f"/jobs/{job_id}/logs",
                    params={**params, "offset": received},
                    timeout=httpx.Timeout(TIMEOUT_S, read=None if follow else TIMEOUT_S),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._refused(response)
                    for chunk in response.iter_bytes():
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.buffer.flush()
                        received += len(chunk)
                return
            except httpx.TransportError as exc:
                attempts += 1
                if attempts > LOG_RECONNECTS:
                    self._unreachable(exc)
                time.sleep(1.0)


def short_command(command: list[str], max_chars: int = 80) -> str:
    import shlex

    text = shlex.join(command)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
