"""Transport security of the real stack: nginx + gunicorn over real TLS (scripts/devstack).

Every HTTPS request trusts only the stack's CA (the bake's certs/ca.pem, or the test CA of the
Mozilla check). See stack.py for the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.scanner.models import ScanCommandsExtraArguments, ServerScanRequest
from sslyze.scanner.scanner import Scanner
from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

from stack import PROJECT_ROOT, LiveStack, Response, free_port, run_devstack

pytestmark = pytest.mark.stack

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=63072000; includeSubDomains"
# Mozilla guidelines 6.0 intermediate, TLS 1.2 part (IANA names).
MOZILLA_INTERMEDIATE_TLS12 = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


def tls_profile() -> str:
    """The profile this bake chose, read from the include line of the nginx template."""
    template = PROJECT_ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
    found = re.search(r"snippets/tls-(\w+)\.conf", template.read_text())
    assert found, "the nginx template includes no TLS profile"
    return found.group(1)


def assert_problem(response: Response, status: int) -> dict[str, object]:
    assert response.status == status
    assert response.header("Content-Type") == "application/problem+json"
    body = json.loads(response.body)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body  # type: ignore[no-any-return]


def assert_one_hsts(response: Response, expected: str = HSTS) -> None:
    assert response.header_values("Strict-Transport-Security") == [expected]


def marker_path(prefix: str) -> str:
    # Shorter than 24 characters: a longer segment mixing letters and digits is logged as
    # "[REDACTED]" (it could be a token), and the marker must stay findable in the logs.
    return f"{prefix}/probe-{uuid.uuid4().hex[:16]}"


def wait_for_log(path: Path, needle: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


# --- plain HTTP -----------------------------------------------------------------------------


def served_names() -> list[str]:
    """The names devstack serves by default besides localhost, as nginx compares them."""
    answers = json.loads((PROJECT_ROOT / ".cookiecutter.json").read_text())
    return ["localhost", "127.0.0.1", "[::1]", answers["domain_name"]]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("name", served_names())
def test_http_pages_redirect_permanently_to_the_requested_server_name(
    live_stack: LiveStack, method: str, name: str
) -> None:
    response = live_stack.http(method, "/some/page?x=1&y=2", host=f"{name}:{live_stack.http_port}")
    assert response.status == 301
    expected = f"https://{name}:{live_stack.https_port}/some/page?x=1&y=2"
    assert response.header("Location") == expected
    assert response.header_values("Strict-Transport-Security") == []


def test_http_redirect_ignores_the_port_and_case_the_client_sends(live_stack: LiveStack) -> None:
    response = live_stack.http("GET", "/healthz", host="LocalHost:1234")
    assert response.header("Location") == f"https://localhost:{live_stack.https_port}/healthz"


def test_http_absolute_target_for_another_host_is_not_redirected(live_stack: LiveStack) -> None:
    # nginx picks the server by the request line's host, so this is an unknown host (444).
    with pytest.raises(ConnectionError):
        live_stack.http("GET", "http://evil.example/page", host="localhost")


@pytest.mark.parametrize(
    ("method", "prefix"),
    [
        ("GET", "/api/v1"),
        ("POST", "/api/v1"),
        ("GET", "/api"),
        ("POST", "/webhooks"),
        ("GET", "/webhooks"),
    ],
)
def test_http_api_and_webhooks_are_refused_and_never_reach_the_app(
    live_stack: LiveStack, method: str, prefix: str
) -> None:
    path = marker_path(prefix)
    response = live_stack.http(
        method, path, headers={"Authorization": "Bearer not-a-real-token"}, body=b"{}"
    )
    assert_problem(response, 403)
    assert response.header("Location") is None
    assert response.header_values("Strict-Transport-Security") == []
    # Control: the same kind of request over HTTPS does reach gunicorn's log ...
    control = marker_path(prefix)
    live_stack.https(method, control, body=b"{}")
    assert wait_for_log(live_stack.gunicorn_log, control)
    # ... so the refused one would be there by now if it had been proxied.
    assert path not in live_stack.gunicorn_log.read_text(errors="replace")


# Spellings that nginx normalises (percent-decoding, merged slashes, dot segments) to /api or
# /webhooks, or that differ only in case or by a ;parameter: none may be redirected, since a
# client that follows the redirect sends its credential again, now over HTTPS, and never
# learns that it already crossed the network in clear text.
@pytest.mark.parametrize(
    "path",
    [
        "/API/v1/me",
        "/Api/v1/items",
        "/api;x/v1/me",
        "/api%3Bx/v1/me",
        "/%61pi/v1/me",
        "/%41PI/v1/me",
        "//api/v1/me",
        "/api%2Fv1/me",
        "/./api/v1/me",
        "/page/../api/v1/me",
        "/API",
        "/api.json",
        "/WEBHOOKS/events",
        "/webhooks;x/events",
        "/%77ebhooks/github",
    ],
)
def test_http_refuses_every_spelling_of_api_and_webhooks(live_stack: LiveStack, path: str) -> None:
    response = live_stack.http("GET", path)
    assert_problem(response, 403)
    assert response.header("Location") is None


@pytest.mark.parametrize("path", ["/apiary/page", "/webhooksite", "/docs/api"])
def test_http_pages_merely_starting_like_api_still_redirect(
    live_stack: LiveStack, path: str
) -> None:
    assert live_stack.http("GET", path).status == 301


@pytest.mark.parametrize(
    "credential", [("Authorization", "Bearer not-a-real-token"), ("X-API-Key", "not-a-real-key")]
)
def test_http_requests_carrying_a_credential_are_refused_not_redirected(
    live_stack: LiveStack, credential: tuple[str, str]
) -> None:
    response = live_stack.http("GET", "/healthz", headers=[credential])
    assert_problem(response, 403)
    assert response.header("Location") is None


def test_http_other_methods_are_refused_not_redirected(live_stack: LiveStack) -> None:
    response = live_stack.http("POST", "/some/form", body=b"a=b")
    assert_problem(response, 403)
    assert response.header("Location") is None


def test_acme_challenge_is_served_over_http_from_the_webroot(live_stack: LiveStack) -> None:
    token = uuid.uuid4().hex
    webroot = live_stack.acme_webroot / ".well-known" / "acme-challenge"
    webroot.mkdir(parents=True, exist_ok=True)
    webroot.chmod(0o755)
    (webroot.parent).chmod(0o755)
    (webroot / token).write_text("challenge-" + token)
    (webroot / token).chmod(0o644)
    try:
        response = live_stack.http("GET", f"/.well-known/acme-challenge/{token}")
    finally:
        (webroot / token).unlink()
    assert response.status == 200
    assert response.body == b"challenge-" + token.encode()


# --- HSTS and headers over HTTPS --------------------------------------------------------------


def test_hsts_once_on_app_200_404_and_405(live_stack: LiveStack) -> None:
    ok = live_stack.https("GET", "/healthz")
    assert ok.status == 200
    assert_one_hsts(ok)
    missing = live_stack.https("GET", "/no/such/page")
    assert_problem(missing, 404)
    assert_one_hsts(missing)
    wrong_method = live_stack.https("DELETE", "/healthz")
    assert_problem(wrong_method, 405)
    assert_one_hsts(wrong_method)


def test_hsts_once_on_nginx_413(live_stack: LiveStack) -> None:
    response = live_stack.https(
        "POST",
        "/webhooks/events",
        body=b"x" * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 413)
    assert body["title"] == "Content Too Large"
    assert_one_hsts(response)
    for name, value in SECURITY_HEADERS.items():
        assert response.header_values(name) == [value]


PRELOAD_HSTS = "max-age=31536000; includeSubDomains; preload"
ONE_YEAR = 365 * 86400


@pytest.fixture(scope="module")
def preload_stack(start_stack: Callable[..., LiveStack]) -> LiveStack:
    """Non-default HSTS and rate limits: nginx and the app read the same settings."""
    return start_stack(
        {
            "RATE_LIMIT_PER_SECOND": "1",
            "RATE_LIMIT_BURST": "0",
            "HSTS_PRELOAD": "true",
            "HSTS_MAX_AGE": str(ONE_YEAR),
        }
    )


def test_rate_limit_answers_429_problem_with_hsts_and_retry_after(
    preload_stack: LiveStack,
) -> None:
    stack = preload_stack
    statuses = [stack.https("GET", "/api/v1/me").status for _ in range(5)]
    assert 429 in statuses
    limited = stack.https("GET", "/api/v1/me")
    assert_problem(limited, 429)
    assert_one_hsts(limited, PRELOAD_HSTS)
    # At RATE_LIMIT_PER_SECOND >= 1 a request is allowed again within a second.
    assert limited.header_values("Retry-After") == ["1"]
    assert_one_hsts(stack.https("GET", "/healthz"), PRELOAD_HSTS)
    # Only /api/ and /webhooks/ are limited.
    assert all(stack.https("GET", "/healthz").status == 200 for _ in range(5))


def preload_issues(value: str) -> list[str]:
    """What the HSTS preload list (hstspreload.org) holds against this header value: its
    errors, and the warnings of its parser (repeated, empty or unknown directives)."""
    issues = []
    seen: set[str] = set()
    max_age: int | None = None
    for directive in (part.strip() for part in value.split(";")):
        name = directive.lower().partition("=")[0]
        if name in seen:
            issues.append(f"repeated {name}")
        seen.add(name)
        if name == "max-age":
            digits = directive.partition("=")[2]
            if not digits.isdigit() or (digits.startswith("0") and len(digits) > 1):
                issues.append(f"bad max-age {directive!r}")
            else:
                max_age = int(digits)
        elif directive.lower() not in {"includesubdomains", "preload"}:
            issues.append(f"unknown directive {directive!r}")
    if max_age is None or max_age < ONE_YEAR:
        issues.append(f"max-age below one year: {max_age}")
    issues.extend(f"no {name}" for name in ("includesubdomains", "preload") if name not in seen)
    return issues


@pytest.mark.parametrize("name", ["localhost", served_names()[-1]])
def test_hsts_preload_eligibility(preload_stack: LiveStack, name: str) -> None:
    stack = preload_stack
    # Plain HTTP: no HSTS (it means nothing there), and the first redirect goes to HTTPS on
    # the very host that was asked for, so the browser records the policy for that host.
    first = stack.http("GET", "/", host=f"{name}:{stack.http_port}")
    assert first.status == 301
    assert first.header_values("Strict-Transport-Security") == []
    assert first.header("Location") == f"https://{name}:{stack.https_port}/"
    # HTTPS: the root answers itself (no further redirect), with one preloadable policy.
    root = stack.https("GET", "/", sni=name, host=f"{name}:{stack.https_port}")
    assert root.status == 200
    (policy,) = root.header_values("Strict-Transport-Security")
    assert preload_issues(policy) == []


def test_hsts_preload_issues_are_found() -> None:
    # The check above can fail: each rule it applies, broken once.
    assert preload_issues(PRELOAD_HSTS) == []
    assert preload_issues("max-age=31535999; includeSubDomains; preload") != []
    assert preload_issues("max-age=31536000; preload") == ["no includesubdomains"]
    assert preload_issues("max-age=31536000; includeSubDomains") == ["no preload"]
    assert preload_issues("max-age=31536000; includeSubDomains; preload; preload") != []
    assert preload_issues("max-age=031536000; includeSubDomains; preload") != []
    assert preload_issues("includeSubDomains; preload") != []


def test_rate_limit_zero_turns_limiting_off(start_stack: Callable[..., LiveStack]) -> None:
    stack = start_stack({"RATE_LIMIT_PER_SECOND": "0", "RATE_LIMIT_BURST": "0"})
    statuses = {stack.https("GET", "/api/v1/me").status for _ in range(30)}
    assert 429 not in statuses


def test_app_down_gives_502_problem_with_hsts_and_down_cleans_up(
    start_stack: Callable[..., LiveStack],
) -> None:
    stack = start_stack()
    stack.kill_gunicorn()
    response = stack.https("GET", "/healthz")
    assert_problem(response, 502)
    assert_one_hsts(response)
    assert stack.devstack("status").returncode == 3
    down = stack.devstack("down")
    assert down.returncode == 0, down.stderr
    stack.running = False
    assert not (stack.run_dir / "nginx.pid").exists()
    assert not stack.socket_path.exists()
    with socket.socket() as probe:  # nginx is gone: its port is free again
        probe.bind(("127.0.0.1", stack.https_port))


def test_down_stops_gunicorn_and_its_workers(start_stack: Callable[..., LiveStack]) -> None:
    # gunicorn renames its processes when setproctitle is installed (mutmut brings it into the
    # dev tools), so its command line no longer shows the arguments devstack started it with.
    stack = start_stack()
    master = int((stack.run_dir / "gunicorn.pid").read_text().strip())
    processes = [master, *stack.gunicorn_worker_pids()]
    assert len(processes) > 1
    down = stack.devstack("down")
    assert down.returncode == 0, down.stderr
    stack.running = False
    deadline = time.monotonic() + 10
    while alive := [pid for pid in processes if Path(f"/proc/{pid}").exists()]:
        assert time.monotonic() < deadline, f"still running after down: {alive}"
        time.sleep(0.1)


def test_down_after_an_nginx_crash_frees_the_ports(start_stack: Callable[..., LiveStack]) -> None:
    stack = start_stack()
    master = int((stack.run_dir / "nginx.pid").read_text().strip())
    os.kill(master, signal.SIGKILL)
    down = stack.devstack("down")
    assert down.returncode == 0, down.stderr
    stack.running = False
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.socket() as probe:  # nginx's orphaned workers are gone too
                probe.bind(("127.0.0.1", stack.https_port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "DPoP", "dpop"])
def test_nginx_refusing_two_authorization_headers_sends_the_schemes_challenge(
    live_stack: LiveStack, scheme: str
) -> None:
    # nginx answers a repeated Authorization header itself (400) before the app could; the
    # client must still learn why, in the scheme it used (RFC 6750 section 3.1, RFC 9449
    # section 7.1: invalid_request).
    headers = [("Authorization", f"{scheme} first"), ("Authorization", f"{scheme} second")]
    response = live_stack.https("GET", "/api/v1/me", headers=headers)
    assert_problem(response, 400)
    expected = "DPoP" if scheme.lower() == "dpop" else "Bearer"
    assert response.header_values("WWW-Authenticate") == [f'{expected} error="invalid_request"']
    assert_one_hsts(response)


def test_nginx_400_without_a_credential_has_no_challenge(live_stack: LiveStack) -> None:
    response = live_stack.https("GET", "/api/v1/me", headers=[("Host", "localhost")])
    assert_problem(response, 400)
    assert response.header_values("WWW-Authenticate") == []


def test_api_responses_carry_security_headers_and_no_versions(live_stack: LiveStack) -> None:
    response = live_stack.https("GET", "/api/v1/me")
    assert response.status == 401
    for name, value in SECURITY_HEADERS.items():
        assert response.header_values(name) == [value], name
    assert response.header_values("Server") == ["nginx"]
    assert response.header("X-Powered-By") is None
    assert len(response.header_values("X-Request-ID")) == 1


# --- what the app trusts ----------------------------------------------------------------------


def test_client_forwarding_headers_do_not_change_what_the_app_sees(
    live_stack: LiveStack,
) -> None:
    path = marker_path("/api/v1")
    response = live_stack.https(
        "GET",
        path,
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": "evil.example",
            "X-Request-ID": "client-chosen-id",
            "Forwarded": "for=198.51.100.1;proto=http",
        },
    )
    # A trusted "http" would have made the app refuse the request as plain HTTP (403).
    assert response.status == 404
    request_id = response.header("X-Request-ID")
    assert request_id
    assert request_id != "client-chosen-id"
    assert wait_for_log(live_stack.gunicorn_log, path)
    log = live_stack.gunicorn_log.read_text(errors="replace")
    lines_about_it = [line for line in log.splitlines() if path in line]
    assert lines_about_it
    assert all('"client": "127.0.0.1"' in line for line in lines_about_it)
    assert "203.0.113.7" not in log
    assert "198.51.100.1" not in log
    assert "evil.example" not in log


def test_gunicorn_socket_without_proxy_headers_is_plain_http_to_the_app(
    live_stack: LiveStack,
) -> None:
    refused = live_stack.direct("GET", "/api/v1/me")
    assert_problem(refused, 403)
    assert refused.header_values("Strict-Transport-Security") == []
    health = live_stack.direct("GET", "/healthz")
    assert health.status == 200
    # The app does send HSTS when told the request was HTTPS; through nginx it still appears
    # once (see test_hsts_once_*), because nginx hides the app's copy and sends its own.
    claimed = live_stack.direct("GET", "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert claimed.header_values("Strict-Transport-Security") == [HSTS]


def test_unknown_host_is_refused_on_both_ports(live_stack: LiveStack) -> None:
    over_https = live_stack.https("GET", "/healthz", host="evil.example")
    assert_problem(over_https, 421)
    assert_one_hsts(over_https)
    # 444: nginx closes the connection without a word (http.client.RemoteDisconnected).
    with pytest.raises(ConnectionError):
        live_stack.http("GET", "/healthz", host="evil.example")


def test_sni_and_host_must_name_the_same_server(live_stack: LiveStack) -> None:
    response = live_stack.https("GET", "/healthz", sni="localhost", host="127.0.0.1")
    assert_problem(response, 421)


@pytest.mark.parametrize("sni", ["evil.example", None])
def test_unknown_or_missing_sni_is_refused_in_the_handshake(
    live_stack: LiveStack, sni: str | None
) -> None:
    context = ssl.create_default_context(cafile=str(live_stack.ca_file))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", live_stack.https_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"),
    ):
        context.wrap_socket(raw, server_hostname=sni)


# --- TLS ----------------------------------------------------------------------------------------


def handshake(stack: LiveStack, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", stack.https_port), timeout=5)
    return context.wrap_socket(raw, server_hostname=stack.server_name)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(live_stack: LiveStack, version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(live_stack.ca_file))
    # Let this client offer the old version at all (OpenSSL 3 refuses it by default), so
    # the refusal observed is the server's.
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    with pytest.raises(ssl.SSLError, match=r"ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
        handshake(live_stack, context).close()


def test_tls_1_2_follows_the_profile(live_stack: LiveStack) -> None:
    context = ssl.create_default_context(cafile=str(live_stack.ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if tls_profile() == "modern":
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            handshake(live_stack, context).close()
        return
    with handshake(live_stack, context) as connection:
        negotiated = connection.cipher()
    assert negotiated is not None
    cipher_name, version, _bits = negotiated
    assert version == "TLSv1.2"
    assert cipher_name.startswith("ECDHE-")
    assert "GCM" in cipher_name or "CHACHA" in cipher_name


def test_tls_1_3_and_http2_by_alpn(live_stack: LiveStack) -> None:
    context = ssl.create_default_context(cafile=str(live_stack.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(live_stack, context) as connection:
        assert connection.version() == "TLSv1.3"
        assert connection.selected_alpn_protocol() == "h2"


def test_session_tickets_are_off(live_stack: LiveStack) -> None:
    rendered = live_stack.run_dir / "conf" / "conf.d" / "snippets" / f"tls-{tls_profile()}.conf"
    assert "ssl_session_tickets off;" in rendered.read_text()
    if tls_profile() == "modern":
        # TLS 1.3 resumption always hands out a ticket; with tickets "off" OpenSSL makes it a
        # stateful one (a cache key), which a client cannot tell apart. Only 1.2 shows it.
        return
    context = ssl.create_default_context(cafile=str(live_stack.ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake(live_stack, context) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while connection.recv(4096):
            pass
        session = connection.session
    assert session is not None
    assert not session.has_ticket


def test_mozilla_profile_compliance_by_sslyze(mozilla_stack: LiveStack) -> None:
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(
            "localhost", mozilla_stack.https_port, ip_address="127.0.0.1"
        ),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication="localhost"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=mozilla_stack.ca_file)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    profile = TlsConfigurationEnum(tls_profile())
    # Raises ServerNotCompliantWithTlsConfiguration listing every deviation.
    check_server_against_tls_configuration(result, MozillaTlsConfiguration.get(profile))
    # sslyze ships guidelines 5.7; 6.0 also drops the DHE suites it still allows.
    assert result.scan_result is not None
    tls12 = result.scan_result.tls_1_2_cipher_suites.result
    assert tls12 is not None
    accepted = {suite.cipher_suite.name for suite in tls12.accepted_cipher_suites}
    expected = set() if tls_profile() == "modern" else MOZILLA_INTERMEDIATE_TLS12
    assert accepted <= expected
    if tls_profile() == "intermediate":
        assert accepted


# --- devstack itself --------------------------------------------------------------------------


def test_devstack_reports_a_missing_nginx(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "NGINX": str(tmp_path / "no-nginx-here")}
    result = run_devstack("up", env)
    assert result.returncode == 1
    assert "is not an executable nginx" in result.stderr


def test_devstack_reports_a_taken_port(live_stack: LiveStack, tmp_path: Path) -> None:
    env = {
        **live_stack.env,
        "DEVSTACK_RUN_DIR": str(tmp_path / "run"),
        "HTTP_PORT": str(free_port()),
    }
    result = run_devstack("up", env)
    assert result.returncode == 1
    assert f"port {live_stack.https_port} (HTTPS_PORT) is already in use" in result.stderr
