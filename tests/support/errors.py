"""The CLI's failure shape, as tests check it."""

from __future__ import annotations

import subprocess


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The CLI's failure shape: `code`, one `layerfs: error:` line holding `words`."""
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerfs: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
