# Sourced by ./run and ./run-tests: a virtual environment with the pinned dependencies.
# Quick when nothing changed: pip runs only when requirements.txt differs from the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11+ is needed (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python dependencies"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
export DJANGO_SETTINGS_MODULE=server.settings
# The local development path (./run, ./run-tests) runs with Django's debug mode unless told otherwise;
# the settings' default is off, and off refuses the development secret key.
export DJANGO_DEBUG=${DJANGO_DEBUG:-true}
