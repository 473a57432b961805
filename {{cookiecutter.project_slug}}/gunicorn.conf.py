"""gunicorn settings; every knob comes from the environment so one file serves every deployment.

gunicorn is only ever reached through nginx (a unix socket in the native stack, an unpublished
port in compose). See README "Sizing gunicorn" for how the worker defaults were chosen.
"""

from __future__ import annotations

import sys

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.logs import gunicorn_logconfig_dict, read_log_level
from {{ cookiecutter.package_name }}.settings import (
    ConfigError,
    read_environment,
    read_web_concurrency,
)
from {{ cookiecutter.package_name }}.transport import DEFAULT_FORWARDED_ALLOW_IPS, TrustedProxies

# The same view of the environment as the app's settings (`.env` under the real environment),
# so that e.g. WEB_CONCURRENCY means one thing to gunicorn and to the settings that check it.
ENVIRONMENT = read_environment()


def refuse(error: ValueError) -> SystemExit:
    """The one-line start-up refusal every configuration error gets."""
    sys.stderr.write(f"configuration error: {error}\n")
    return SystemExit(1)


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = ENVIRONMENT.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdecimal() or int(raw) < minimum:
        problem = f"must be a whole number of at least {minimum}, got {raw!r}"
        raise refuse(ConfigError(name, problem))
    return int(raw)


wsgi_app = "{{ cookiecutter.package_name }}:create_app()"

# 127.0.0.1 by default: never listen on a public interface unless told to (compose binds
# 0.0.0.0:8000 inside its private network, devstack a unix socket under a 0700 directory).
bind = [ENVIRONMENT.get("GUNICORN_BIND", "127.0.0.1:8000")]

# Measured on 2 cores through nginx over TLS (benchmarks/gunicorn_sizing.py, README "Sizing
# gunicorn"): workers = cores beat 2 * cores + 1 on throughput and tail alike. Re-measure on
# your own hardware before changing it.
try:
    workers = read_web_concurrency(ENVIRONMENT)
    loglevel = read_log_level(ENVIRONMENT.get("LOG_LEVEL")).lower()
except ValueError as error:
    raise refuse(error) from None
# gunicorn's gthread worker, whose own refusals are problem+json like the app's (serving.py),
# and whose threads each serve requests on a loop of their own instead of a pool's. One thread
# is the cheapest per request for CPU-bound routes; the second keeps a worker answering while a
# request waits on the network (README "Sizing gunicorn"). nginx in front buffers slow clients.
worker_class = "{{ cookiecutter.package_name }}.serving.ThreadWorker"
threads = env_int("GUNICORN_THREADS", 2, minimum=1)

# A worker whose loops are all stuck longer than this is killed and replaced (no request should
# take 30 s). gunicorn reads 0 as "never", so it is refused like the limits below, where 0
# means "unlimited".
timeout = env_int("GUNICORN_TIMEOUT", 30, minimum=1)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Longer than nginx's upstream keepalive_timeout (60 s) so gunicorn never closes an idle
# connection nginx is about to reuse (which would surface as sporadic 502s).
keepalive = env_int("GUNICORN_KEEPALIVE", 75)

# Requests that reach gunicorn already passed nginx's limits; these are a second fence. nginx
# refuses request lines of 4000 bytes and more itself (proxy-to-app.conf), below the line limit;
# it cannot count headers or judge their bytes, so gunicorn's refusals of those reach clients,
# as problem+json (serving.ThreadWorker).
limit_request_line = env_int("GUNICORN_LIMIT_REQUEST_LINE", 4094, minimum=1)
limit_request_fields = env_int("GUNICORN_LIMIT_REQUEST_FIELDS", 100, minimum=1)
limit_request_field_size = env_int("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 8190, minimum=1)

# Proxy trust is decided once, in the app (transport.py: ProxyFix with TRUSTED_PROXY_HOPS, for
# peers in FORWARDED_ALLOW_IPS only). gunicorn must not decide it a second time from
# X-Forwarded-Proto or forwarder headers, so both are emptied; the same FORWARDED_ALLOW_IPS
# then limits which TCP peers gunicorn trusts for its remaining extras (h2c upgrade) and which
# peers' X-Forwarded-For names the client in the access log. As in gunicorn, a unix socket's
# peer always counts: the socket directory's permissions (devstack: 0700, checked) fence it.
forwarded_allow_ips = (
    ENVIRONMENT.get("FORWARDED_ALLOW_IPS", "").strip() or DEFAULT_FORWARDED_ALLOW_IPS
)
try:
    TrustedProxies.parse(forwarded_allow_ips)
except ValueError as error:
    raise refuse(error) from None
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""
# Headers with underscores are dropped rather than merged with their dashed twins.
header_map = "drop"
# A unix socket is only connectable by its owner and group (nginx), never by everyone.
umask = 0o007

# gunicorn 27 opens a control socket in $HOME by default; several stacks on one machine would
# share it and it lets any process of this user resize or stop the server. Opt in explicitly.
control_socket_disable = ENVIRONMENT.get("GUNICORN_CONTROL_SOCKET", "") == ""
if not control_socket_disable:
    control_socket = ENVIRONMENT["GUNICORN_CONTROL_SOCKET"]

# gunicorn sends "Server: gunicorn" without a version; nginx replaces it anyway.

# Logs go to stderr/stdout; devstack redirects them under var/log/. The app writes one JSON
# access line per request (logs.py), so gunicorn's own access line is off unless asked for
# ("-" for stdout or a file): serving.Logger then skips the work of building it.
accesslog = ENVIRONMENT.get("GUNICORN_ACCESS_LOG") or None
errorlog = ENVIRONMENT.get("GUNICORN_ERROR_LOG", "-")
logger_class = "{{ cookiecutter.package_name }}.serving.Logger"


def on_starting(server: object) -> None:
    """Build the app once in the master before any worker starts, so that a bad configuration
    stops gunicorn with one line naming the setting instead of every worker failing to boot
    with a traceback. Building it (not only reading the settings) also runs each security
    module's own checks: keys that do not parse, a replay store that cannot be opened."""
    try:
        create_app()
    # ConfigError and each module's own configuration errors are all ValueErrors.
    except ValueError as error:
        raise refuse(error) from None


# --- logging: JSON lines through the redaction filter (logs.py) -----------------------------
# gunicorn's error and access logs and the app's own lines: one JSON shape, all redacted. The
# access line is built from single atoms (method, path without query, status, ...); this format
# only matters if the formatter is ever swapped, and then it still carries no query string.
access_log_format = "%(m)s %(U)s %(s)s"
logconfig_dict = gunicorn_logconfig_dict(
    loglevel,
    accesslog=accesslog,
    errorlog=errorlog,
    trusted_proxy_hops=env_int("TRUSTED_PROXY_HOPS", 1),
    forwarded_allow_ips=forwarded_allow_ips,
)
# --- end logging ---------------------------------------------------------------------------
