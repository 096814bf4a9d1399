"""gunicorn's logger with a cheaper access line (`--logger-class api.access_log.AccessLog`).

gunicorn builds every request's line from a dict of all request headers, response headers
and WSGI environ entries, whatever the format uses; that cost more than some requests'
own work. This writes the same line (gunicorn's default format) from the fields it shows.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

from gunicorn.config import AccessLogFormat
from gunicorn.glogging import Logger
from gunicorn.http import Request
from gunicorn.http.wsgi import Response


class AccessLog(Logger):
    """Writes `h l u t "r" s b "f" "a"` lines; any other configured format is left to gunicorn."""

    def access(
        self,
        resp: Response,
        req: Request,
        environ: MutableMapping[str, Any],
        request_time: timedelta,
    ) -> None:
        if not self.access_log_enabled:
            return
        if self.cfg.access_log_format != AccessLogFormat.default:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        self.access_log.info(
            '%s - %s %s "%s %s %s" %s %s "%s" "%s"',
            environ.get("REMOTE_ADDR", "-"),
            # gunicorn's own (private) parser of Basic credentials, which its stubs leave out.
            self._get_user(environ) or "-",  # type: ignore[attr-defined]
            time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
            environ["REQUEST_METHOD"],
            environ["RAW_URI"],
            environ["SERVER_PROTOCOL"],
            status,
            "-" if sent is None else sent,
            environ.get("HTTP_REFERER", "-"),
            environ.get("HTTP_USER_AGENT", "-"),
        )
