"""The copy-paste example of bindings/python/README.md "Use from Python"
runs and prints what the README shows."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

EXAMPLE = ROOT / "examples/python/quickstart.py"
README = ROOT / "bindings/python/README.md"


def test_quickstart_prints_the_outcome_and_reasons():
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True, cwd=ROOT)
    assert re.fullmatch(
        r"bundle: portcullis-default \S+, \d+ policies\noutcome: allow\nreasons: login permitted\n", out.stdout
    ), out.stdout


def test_the_readme_quotes_the_example_verbatim_with_its_output():
    readme = README.read_text()
    assert re.search(r"^## Use from Python$", readme, re.M)
    example = EXAMPLE.read_text()
    body = example[example.index("from pathlib") :].strip()
    assert body in readme, "README does not quote examples/python/quickstart.py as it is"
    assert "outcome: allow\nreasons: login permitted" in readme
