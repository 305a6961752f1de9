"""Run the megacluster CLI in-process for tests."""

from __future__ import annotations

from megacluster import cli


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``megacluster ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
