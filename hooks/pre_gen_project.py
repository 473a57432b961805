"""Reject answers that would bake a broken or unsafe service, before any file is written.

Standard library only: this runs in whatever Python cookiecutter runs in.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

# Rendered by cookiecutter. JSON escapes every quote and non-ASCII character, so the raw
# string cannot be closed early by an answer.
CONTEXT_JSON = r"""{{ cookiecutter | jsonify }}"""

SLUG = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
HOSTNAME_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
EMAIL = re.compile(r"^[^@\s\"'<>]+@[^@\s\"'<>]+\.[^@\s\"'<>]+$")

# Importable names the baked service (or its tests) depends on: a package called like one
# of them would be shadowed, or shadow it, depending on sys.path order.
DEPENDENCY_NAMES = frozenset(
    {
        "flask",
        "werkzeug",
        "jinja2",
        "click",
        "itsdangerous",
        "markupsafe",
        "blinker",
        "gunicorn",
        "jwt",
        "cryptography",
        "cffi",
        "dotenv",
        "redis",
        "pytest",
        "joserfc",
        "standardwebhooks",
        "stripe",
        "sslyze",
        "schemathesis",
        "mypy",
        "ruff",
        "requests",
        "urllib3",
        "setuptools",
        "pip",
        "tests",
        "scripts",
    }
)


class InvalidAnswer(ValueError):
    """An answer that cannot be baked; the message names the variable and the rule."""


# Free text lands inside Python docstrings and TOML strings: a quote, backslash or control
# character there could end the string and inject code into the baked service.
UNSAFE_TEXT = re.compile(r"[\"'\\\x00-\x1f\x7f]")


def validate_free_text(variable: str, value: str) -> None:
    if not value.strip() or UNSAFE_TEXT.search(value):
        raise InvalidAnswer(
            f"{variable} must be non-empty and contain no quotes, backslashes or control "
            "characters (line breaks included)"
        )


def validate_project_name(name: str) -> None:
    validate_free_text("project_name", name)


def validate_project_slug(slug: str) -> None:
    if not SLUG.match(slug):
        raise InvalidAnswer(
            f"project_slug {slug!r} must be kebab-case: lowercase letters, digits and single "
            "hyphens, starting with a letter"
        )


def validate_package_name(name: str) -> None:
    if not name.isidentifier() or not name.isascii():
        raise InvalidAnswer(f"package_name {name!r} must be a valid ASCII Python identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidAnswer(f"package_name {name!r} must not be a Python keyword")
    if name != name.lower():
        raise InvalidAnswer(f"package_name {name!r} must be lowercase (PEP 8)")
    if name in sys.stdlib_module_names:
        raise InvalidAnswer(f"package_name {name!r} would shadow the standard library module")
    if name in DEPENDENCY_NAMES:
        raise InvalidAnswer(f"package_name {name!r} would shadow a dependency of the service")


def validate_domain_name(domain: str) -> None:
    rule = (
        f"domain_name {domain!r} must be an RFC 1123 hostname: dot-separated labels of letters, "
        "digits and inner hyphens, each at most 63 characters, 253 in all, not an IP address"
    )
    labels = domain.split(".")
    if len(domain) > 253 or not all(HOSTNAME_LABEL.match(label) for label in labels):
        raise InvalidAnswer(rule)
    if labels[-1].isdigit():
        raise InvalidAnswer(rule)


def validate_author_email(email: str) -> None:
    if not EMAIL.match(email):
        raise InvalidAnswer(f"author_email {email!r} must look like name@example.com")


def validate(context: dict[str, str]) -> None:
    validate_project_name(context["project_name"])
    validate_free_text("description", context["description"])
    validate_free_text("author_name", context["author_name"])
    validate_project_slug(context["project_slug"])
    validate_package_name(context["package_name"])
    validate_domain_name(context["domain_name"])
    validate_author_email(context["author_email"])
    # Choice variables (python_version, tls_profile, ci) need no check here: cookiecutter
    # refuses a value outside cookiecutter.json's list before this hook runs.


def main() -> int:
    try:
        validate(json.loads(CONTEXT_JSON))
    except InvalidAnswer as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
