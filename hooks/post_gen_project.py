"""Finish a bake: drop the files of options not chosen, then make this bake's own secrets.

Standard library only. Secrets, keys and certificates are made by the baked service's own
scripts/bootstrap.py, so that a teammate who clones the service later makes theirs the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

CONTEXT_JSON = r"""{{ cookiecutter | jsonify }}"""

# Files that only one value of an option needs, relative to the baked project.
FILES_BY_OPTION: dict[str, dict[str, list[str]]] = {
    "ci": {
        "github": [".github"],
        "gitlab": [".gitlab-ci.yml", ".gitlab"],
        "none": [],
    },
    "tls_profile": {
        "intermediate": ["deploy/nginx/templates/snippets/tls-intermediate.conf.template"],
        "modern": ["deploy/nginx/templates/snippets/tls-modern.conf.template"],
    },
}

MKCERT_HINT = """\
mkcert was not found, so a one-off local CA was made with openssl (its key is already deleted).
  For certificates your browser trusts, install mkcert (Debian/Ubuntu: apt install mkcert,
  macOS: brew install mkcert), run `mkcert -install` once, then `make bootstrap FORCE=1`.
  Meanwhile: curl --cacert certs/ca.pem https://localhost:8443/healthz"""


def remove_unselected_files(project: Path, context: dict[str, str]) -> list[str]:
    removed = []
    for option, files_by_value in FILES_BY_OPTION.items():
        for value, paths in files_by_value.items():
            if value == context[option]:
                continue
            for relative in paths:
                target = project / relative
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                else:
                    continue
                removed.append(relative)
    return removed


def load_bootstrap(project: Path) -> ModuleType:
    path = project / "scripts" / "bootstrap.py"
    spec = importlib.util.spec_from_file_location("bootstrap", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_local_secrets(project: Path) -> list[str]:
    made: list[str] = load_bootstrap(project).bootstrap(project)
    return made


def next_steps(context: dict[str, str], made: list[str], mkcert_found: bool) -> str:
    lines = [f"Baked {context['project_name']} into ./{context['project_slug']}"]
    lines += [f"  made: {item}" for item in made]
    lines += [
        "  (certs/, keys/ and .env are git-ignored; secret files are mode 0600)",
        "",
        "Next:",
        f"  cd {context['project_slug']}",
        "  make install   # virtualenv with the service and its dev tools",
        "  make test      # the service's own tests",
        "  make run       # nginx + gunicorn on https://localhost:8443",
    ]
    if not mkcert_found:
        lines += ["", MKCERT_HINT]
    return "\n".join(lines)


def main() -> int:
    context = json.loads(CONTEXT_JSON)
    project = Path.cwd()
    remove_unselected_files(project, context)
    mkcert_found = shutil.which("mkcert") is not None
    try:
        made = make_local_secrets(project)
    except Exception as error:
        print(f"ERROR: could not create local secrets: {error}", file=sys.stderr)
        return 1
    print(next_steps(context, made, mkcert_found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
