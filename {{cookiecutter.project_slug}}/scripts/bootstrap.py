#!/usr/bin/env python3
"""Create this checkout's local secrets: dev TLS certificates, a dev JWT key pair and `.env`.

The template's post-generation hook runs these steps at bake time; a teammate who clones the
service runs `make bootstrap` to get their own (none of these files is ever committed).
Existing files are kept unless --force is given, so a rerun never destroys working secrets.
It also makes an empty API key file (var/api-keys.json, for `flask api-keys new`) when there is
none; that one is kept even with --force, since it lists the keys already handed out.

Standard library only, plus the `openssl` command (and `mkcert` when it is on PATH).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
CA_FILE = "ca.pem"
JWT_PRIVATE_FILE = "dev_jwt_private.pem"
JWT_PUBLIC_FILE = "dev_jwt_public.pem"
DEV_ISSUER = "https://dev-issuer.localhost/"
# Browsers refuse leaf certificates valid for more than 398 days.
LEAF_DAYS = 397
# The fallback CA only lives long enough to sign one leaf; its key is deleted afterwards.
CA_DAYS = 398
PRIVATE_MODE = 0o600
API_KEYS_FILE = "var/api-keys.json"


class BootstrapError(RuntimeError):
    """A step could not complete; the message says what to do."""


@dataclass(frozen=True)
class Certificates:
    cert: Path
    key: Path
    ca: Path
    made_by: str  # "mkcert" or "openssl"


def server_names(domain_name: str) -> list[str]:
    names = list(LOCAL_NAMES)
    if domain_name not in names:
        names.append(domain_name)
    return names


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            command, check=True, capture_output=True, text=True, **kwargs
        )
    except FileNotFoundError as error:
        raise BootstrapError(f"{command[0]} is not installed; install it and rerun") from error
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or error.stdout or "").strip().splitlines()[-1:]
        raise BootstrapError(f"{' '.join(command[:2])} failed: {' '.join(detail)}") from error


def make_private(path: Path) -> None:
    path.chmod(PRIVATE_MODE)


def write_private_text(path: Path, text: str) -> None:
    """Write a secret so that it is never readable by others, not even for an instant.

    Never in place: a file an older run (or a user) left readable may have been opened by
    someone meanwhile, and modes are only checked at open time. A fresh file made 0600 in the
    same directory is renamed over it instead."""
    with staging_directory(path.parent) as staging:
        fd = os.open(staging / path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        install(staging / path.name, path)


@contextlib.contextmanager
def staging_directory(directory: Path) -> Iterator[Path]:
    """A private (0700) directory beside the files to replace, removed afterwards: what is
    made in it is out of everyone else's reach until install() renames it into place."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".staging-") as staging:
        yield Path(staging)


def install(made: Path, target: Path) -> None:
    # rename(2) replaces the name, not the old file's contents: handles on it stay with it.
    os.replace(made, target)


def make_certificates_with_mkcert(certs_dir: Path, names: list[str]) -> Certificates:
    cert, key, ca = certs_dir / CERT_FILE, certs_dir / KEY_FILE, certs_dir / CA_FILE
    with staging_directory(certs_dir) as staging:
        run(
            [
                "mkcert",
                "-cert-file",
                str(staging / CERT_FILE),
                "-key-file",
                str(staging / KEY_FILE),
                *names,
            ]
        )
        make_private(staging / KEY_FILE)
        caroot = Path(run(["mkcert", "-CAROOT"]).stdout.strip())
        # Only the CA certificate is copied: clients need it to verify, and the CA key must
        # stay in mkcert's own store, never in a project directory.
        shutil.copyfile(caroot / "rootCA.pem", staging / CA_FILE)
        for made in (key, cert, ca):
            install(staging / made.name, made)
    return Certificates(cert, key, ca, "mkcert")


def openssl_extensions(names: list[str]) -> str:
    alt_names = ",".join(
        f"IP:{name}" if name.replace(".", "").isdigit() or ":" in name else f"DNS:{name}"
        for name in names
    )
    return (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={alt_names}\n"
    )


def make_certificates_with_openssl(certs_dir: Path, names: list[str], label: str) -> Certificates:
    cert, key, ca = certs_dir / CERT_FILE, certs_dir / KEY_FILE, certs_dir / CA_FILE
    with staging_directory(certs_dir) as staging:
        staged = [staging / CERT_FILE, staging / KEY_FILE, staging / CA_FILE]
        sign_with_a_one_off_ca(*staged, names=names, label=label)
        for made in (key, cert, ca):
            install(staging / made.name, made)
    return Certificates(cert, key, ca, "openssl")


def sign_with_a_one_off_ca(
    cert: Path, key: Path, ca: Path, *, names: list[str], label: str
) -> None:
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        ca_key, csr, extensions = scratch / "ca-key.pem", scratch / "leaf.csr", scratch / "leaf.ext"
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(ca_key),
                "-out",
                str(ca),
                "-days",
                str(CA_DAYS),
                "-subj",
                f"/O={label} development CA/CN={label} dev CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        run(
            [
                "openssl",
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                f"/O={label} development/CN={names[0]}",
            ]
        )
        make_private(key)
        extensions.write_text(openssl_extensions(names), encoding="utf-8")
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca),
                "-CAkey",
                str(ca_key),
                "-CAserial",
                str(scratch / "ca.srl"),
                "-CAcreateserial",
                "-out",
                str(cert),
                "-days",
                str(LEAF_DAYS),
                "-sha256",
                "-extfile",
                str(extensions),
            ]
        )
        # Leaving the scratch directory destroys the CA key: trusting this CA can then
        # never vouch for anything but the leaf just signed.


def make_certificates(certs_dir: Path, domain_name: str, label: str) -> Certificates:
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = server_names(domain_name)
    if shutil.which("mkcert"):
        return make_certificates_with_mkcert(certs_dir, names)
    return make_certificates_with_openssl(certs_dir, names, label)


def make_jwt_keys(keys_dir: Path) -> tuple[Path, Path]:
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = keys_dir / JWT_PRIVATE_FILE, keys_dir / JWT_PUBLIC_FILE
    with staging_directory(keys_dir) as staging:
        new_private, new_public = staging / JWT_PRIVATE_FILE, staging / JWT_PUBLIC_FILE
        # umask-independent: the key is created 0600 before openssl writes to it.
        os.close(os.open(new_private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(new_private),
            ]
        )
        make_private(new_private)
        run(["openssl", "pkey", "-in", str(new_private), "-pubout", "-out", str(new_public)])
        install(new_private, private)
        install(new_public, public)
    return private, public


def new_standard_webhooks_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def env_file_text(domain_name: str) -> str:
    return "\n".join(
        [
            "# Local development settings, made by scripts/bootstrap.py. Never commit this file.",
            "APP_ENV=development",
            f"JWT_ISSUER={DEV_ISSUER}",
            f"JWT_AUDIENCE=https://{domain_name}",
            f"JWT_PUBLIC_KEY_FILE=keys/{JWT_PUBLIC_FILE}",
            f"JWT_DEV_PRIVATE_KEY_FILE=keys/{JWT_PRIVATE_FILE}",
            # Hashes of the keys `flask api-keys new` hands out; unset turns API keys off.
            f"API_KEYS_FILE={API_KEYS_FILE}",
            f"WEBHOOK_SECRET={new_standard_webhooks_secret()}",
            f"GITHUB_WEBHOOK_SECRET={secrets.token_hex(32)}",
            f"STRIPE_WEBHOOK_SECRET=whsec_{secrets.token_urlsafe(32)}",
            # Only docker compose reads it (its Redis, and the app's REPLAY_STORE_URL there).
            f"REDIS_PASSWORD={secrets.token_hex(32)}",
            "",
        ]
    )


def write_env_file(path: Path, domain_name: str) -> Path:
    write_private_text(path, env_file_text(domain_name))
    return path


def make_api_keys_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_text(path, '{"keys": []}\n')
    return path


def read_answers(project: Path) -> dict[str, str]:
    answers_file = project / ".cookiecutter.json"
    try:
        answers: dict[str, str] = json.loads(answers_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BootstrapError(f"cannot read {answers_file}: {error}") from error
    return answers


def missing(paths: list[Path], force: bool) -> bool:
    return force or not all(path.exists() for path in paths)


def bootstrap(project: Path, force: bool = False) -> list[str]:
    """Create whatever is missing and return a line per thing made."""
    answers = read_answers(project)
    domain_name, label = answers["domain_name"], answers["project_slug"]
    made = []
    certs_dir = project / "certs"
    if missing([certs_dir / CERT_FILE, certs_dir / KEY_FILE, certs_dir / CA_FILE], force):
        certificates = make_certificates(certs_dir, domain_name, label)
        made.append(
            f"TLS certificate for {', '.join(server_names(domain_name))} ({certificates.made_by})"
        )
    keys_dir = project / "keys"
    if missing([keys_dir / JWT_PRIVATE_FILE, keys_dir / JWT_PUBLIC_FILE], force):
        make_jwt_keys(keys_dir)
        made.append("RSA-2048 key pair for signing local tokens (keys/)")
    if missing([project / ".env"], force):
        write_env_file(project / ".env", domain_name)
        made.append(".env with fresh secrets (APP_ENV=development)")
    if not (project / API_KEYS_FILE).exists():
        make_api_keys_file(project / API_KEYS_FILE)
        made.append(f"an empty API key file ({API_KEYS_FILE}) for `flask api-keys new`")
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    try:
        made = bootstrap(args.project, force=args.force)
    except BootstrapError as error:
        print(f"bootstrap: {error}", file=sys.stderr)
        return 1
    for line in made or ["nothing to do: certificates, keys and .env exist (--force remakes)"]:
        print(f"bootstrap: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
