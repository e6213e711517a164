"""A real llama.cpp to check and measure the GGUF export with: node-llama-cpp's prebuilt CPU build,
installed from envs/llama_cpp/package-lock.json, driven by envs/llama_cpp/llama_cpp_runtime.mjs.

Why node-llama-cpp and not llama-cpp-python: PyPI has only the latter's sources, whose build took
about 12 minutes on this project's 2-core CI machine; npm's prebuilt binaries install in seconds.
"""
import json
import shutil
import subprocess
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "envs" / "llama_cpp"


class RuntimeMissing(RuntimeError):
    """Node.js or npm is not installed, so llama.cpp cannot be run here."""


def install():
    """The locked node-llama-cpp with only its x64 CPU binaries (85 MB, not the 670 MB of every GPU
    build), unless already installed. `npm install` and not `npm ci`: npm 11 writes no lock entry
    for other platforms' optional binaries, and `npm ci` then refuses the lock as out of sync;
    `npm install` installs what the lock pins and leaves it unchanged."""
    if (RUNTIME_DIR / "node_modules" / "node-llama-cpp").is_dir():
        return
    if not (shutil.which("node") and shutil.which("npm")):
        raise RuntimeMissing("llama.cpp's runtime needs Node.js 20+ and npm (Debian: apt-get install nodejs npm)")
    subprocess.run(["npm", "install", "--omit=optional", "--no-audit", "--no-fund"], cwd=RUNTIME_DIR, check=True,
                   capture_output=True, text=True)


def ask(request: dict, timeout=600) -> dict:
    """One request (see llama_cpp_runtime.mjs for its keys) answered by llama.cpp."""
    install()
    result = subprocess.run(["node", str(RUNTIME_DIR / "llama_cpp_runtime.mjs")], input=json.dumps(request),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"llama.cpp on {request.get('model')}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)
