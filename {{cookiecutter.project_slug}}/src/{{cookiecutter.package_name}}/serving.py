"""How gunicorn serves the app: the classes gunicorn.conf.py names.

- ``Logger``: gunicorn's logger, with gunicorn's own access line only when GUNICORN_ACCESS_LOG
  asks for it. The app already writes one JSON access line per request (logs.py), with the
  request id and the authenticated subject; nginx writes another. gunicorn's would be a third,
  and it is the dearest: gunicorn collects every request header and WSGI environ entry into
  "atoms" for it whenever a logging configuration is set, even when nothing writes the line.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped, unused-ignore]


class Logger(GunicornLogger):  # type: ignore[misc, unused-ignore]
    """gunicorn's logger; its access line is written only when ``accesslog`` names a target."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)
