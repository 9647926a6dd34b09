"""Packaging: light imports stay light (a robot computer imports the client without torch)."""

from __future__ import annotations

import subprocess
import sys


def test_client_and_cli_help_do_not_import_torch():
    code = (
        "import sys, robovla, robovla.client\n"
        "from robovla.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(robovla.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"


def test_public_api_names_resolve():
    import robovla

    for name in robovla.__all__:
        assert getattr(robovla, name) is not None
