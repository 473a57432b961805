"""GET / and GET /docs: where an API user starts, and the reference they are pointed to."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }} import home, openapi

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def test_root_names_the_service_and_links_to_its_description(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["name"] == "{{ cookiecutter.package_name }}"
    assert body["version"]
    assert body["links"] == {"openapi": "/openapi.json", "docs": "/docs", "health": "/healthz"}
    assert response.headers["Link"] == (
        '</openapi.json>; rel="service-desc", </docs>; rel="service-doc", </healthz>; rel="status"'
    )


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_root_and_docs_carry_every_api_header(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.getlist(name) == [value], name
    assert response.headers.getlist("Strict-Transport-Security") == [
        "max-age=63072000; includeSubDomains"
    ]


def test_every_link_of_the_root_answers(client: FlaskClient) -> None:
    links = client.get("/").get_json()["links"]
    for target in links.values():
        assert client.get(target).status_code == 200, target


def test_root_is_https_only_like_the_api(app: Flask) -> None:
    # Straight to the app over plain HTTP (no proxy said HTTPS): refused like every route
    # but /healthz.
    response = app.test_client().get("/")
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def test_docs_describe_every_operation_of_the_document(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.mimetype_params == {"charset": "utf-8"}
    text = " ".join(parse(response.get_data(as_text=True)).text)
    document = client.get("/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert f"{method.upper()} {path}" in text
            assert operation["summary"] in text
    assert "items:write" in text
    for name in document["components"]["schemas"]:
        assert name in text


def test_docs_need_nothing_the_content_security_policy_refuses(client: FlaskClient) -> None:
    page = parse(client.get("/docs").get_data(as_text=True))
    assert not {"script", "style", "link", "img", "iframe", "object", "embed", "form"} & set(
        page.tags
    )
    assert not [name for name, _ in page.attributes if name.startswith("on") or name == "style"]
    # Links stay on this page or this service.
    hrefs = [value or "" for name, value in page.attributes if name == "href"]
    assert hrefs
    assert all(re.fullmatch(r"#[\w-]+|/[\w./-]*", href) for href in hrefs), hrefs


def test_docs_escape_what_the_document_says(app: Flask) -> None:
    document: dict[str, Any] = openapi.build_document(app)
    document["info"]["description"] = '<script>alert("x")</script>'
    document["paths"]["/"]["get"]["summary"] = "<img src=x onerror=alert(1)>"
    page = home.render_reference(document)
    assert "<script>" not in page
    assert "<img" not in page
    assert "&lt;script&gt;" in page
