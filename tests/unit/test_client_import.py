"""The client package works in a Python where torch, numpy and pydantic cannot be imported."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("torch", "numpy", "pydantic", "safetensors", "sklearn")

SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any `import name` now raises ImportError

import counterweight_client
from counterweight_client import Client, AsyncClient, RetryPolicy, Job

client = Client("http://127.0.0.1:9", api_key="k", retry=RetryPolicy(attempts=1))
assert client.base_url == "http://127.0.0.1:9"
client.close()
Job.from_json({{"id": "a" * 32, "status": "queued", "progress": None}})
AsyncClient("http://127.0.0.1:9")
loaded = [n for n in {BLOCKED!r} if sys.modules.get(n) is not None]
assert not loaded, loaded
print("ok")
"""


def test_client_imports_without_torch_numpy_or_pydantic() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_block_is_effective() -> None:
    # The check above can fail: importing a blocked module in the same setup is an error.
    script = "import sys; sys.modules['numpy'] = None; import numpy"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "import of numpy halted" in result.stderr
