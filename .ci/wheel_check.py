"""The wheel works outside the checkout: build the sdist and the wheel, check them, install the wheel into a fresh
virtual environment in a temporary folder, and use it from there.

1. ``python -m build`` makes the sdist, then the wheel *from the sdist* (so the sdist is complete), without build
   isolation (the project venv's setuptools; nothing downloaded); ``twine check --strict`` checks both.
2. The wheel must carry every preset (``tsn/configs/*.yaml``), the page (``tsn/serving/static``) and ``py.typed``;
   its metadata names the licence as an SPDX expression.
3. A new venv outside the checkout gets the wheel with ``pip install --no-deps``. Its dependencies (torch alone is
   several GB) come from the project venv's site-packages through a ``.pth`` line: a path line adds the folder to
   ``sys.path`` but does not run that folder's own ``.pth`` files, so the editable tsn of the project venv is not
   loaded, and the new venv's own site-packages comes first. The check proves ``tsn.__file__`` is in the new venv.
4. From a folder outside the checkout: the packaged presets are listed, a tiny model is saved in the Hub layout,
   ``tsn predict`` runs it on a small image, and ``tsn serve`` answers on loopback (the page, its info and one
   prediction).

Run by ``make wheel-check`` (part of ``make test``). Prints one line per step with its time; exits non-zero on the
first failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tsn"
STARTED = time.perf_counter()


def step(message: str) -> None:
    print(f"wheel-check [{time.perf_counter() - STARTED:5.1f} s] {message}", flush=True)


def run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300, stderr: bool = False) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"wheel-check: {' '.join(command)} failed with status {result.returncode}:\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + (result.stderr if stderr else "")


def build(dist: Path) -> tuple[Path, Path]:
    log = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], stderr=True)
    warned = [line for line in log.splitlines() if "Deprecat" in line or "is deprecated" in line]
    if warned:
        sys.exit(f"wheel-check: the build warns: {warned[0].strip()}")
    (wheel,), (sdist,) = dist.glob("tsn-*.whl"), dist.glob("tsn-*.tar.gz")
    run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
    return wheel, sdist


def check_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
    expected = {f"tsn/configs/{p.name}" for p in (PACKAGE / "configs").glob("*.yaml")}
    expected |= {f"tsn/serving/static/{p.name}" for p in (PACKAGE / "serving" / "static").iterdir() if p.is_file()}
    expected |= {"tsn/py.typed", "tsn/hub/__init__.py"}
    missing = sorted(expected - names)
    if missing or not any(n.startswith("tsn/configs/") for n in names):
        sys.exit(f"wheel-check: the wheel lacks {', '.join(missing)}")
    if "License-Expression: MIT" not in metadata:
        sys.exit("wheel-check: the wheel's METADATA has no 'License-Expression: MIT' (SPDX licence)")
    if any(n.startswith(("tests/", "src/")) for n in names):
        sys.exit("wheel-check: the wheel carries files outside the package (tests/ or src/)")


def dependency_paths() -> list[str]:
    """This interpreter's site-packages folders (the project venv's, and any its .pth files add), never the source
    tree: the new venv finds torch & co. there, and tsn only in its own site-packages."""
    source = (ROOT / "src").resolve()
    paths = [sysconfig.get_path("purelib"), *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
    return [p for p in dict.fromkeys(paths) if Path(p).is_dir() and not Path(p).resolve().is_relative_to(source)]


def make_venv(folder: Path, wheel: Path) -> Path:
    """A venv without pip (the project's pip installs into it) whose dependencies come from the project venv."""
    run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    python = folder / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    (site / "_tsn_project_dependencies.pth").write_text("".join(f"{path}\n" for path in dependency_paths()))
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", str(wheel)])
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_image(url: str, image: Path) -> dict:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{image.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def serve(tsn: Path, model: Path, image: Path, cwd: Path, env: dict[str, str]) -> None:
    port = free_port()
    server = subprocess.Popen([str(tsn), "serve", "--checkpoint", str(model), "--host", "127.0.0.1", "--port",
                               str(port), "--size", "64"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read() if server.stdout else ""
                    sys.exit(f"wheel-check: tsn serve did not answer on {base}:\n{output[-3000:]}")
                time.sleep(0.3)
        if "<html" not in page.lower():
            sys.exit("wheel-check: tsn serve's page is not HTML")
        with urllib.request.urlopen(f"{base}/api/info", timeout=30) as response:
            info = json.loads(response.read())
        answer = post_image(f"{base}/api/predict", image)
        expected = [task["name"] for task in info["tasks"]]
        answered = [output["task"] for output in answer["outputs"]]
        if not expected or answered != expected or answer["original_size"] != [48, 64]:
            sys.exit(f"wheel-check: tsn serve answered tasks {answered} at {answer['original_size']} for an image of "
                     f"48 x 64; its model has {expected}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def smoke(python: Path, work: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TSN_CACHE_DIR=str(work / "cache"), OMP_NUM_THREADS="1",
               PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")
    tsn = python.parent / "tsn"
    lines = run([str(python), "-c",
                 "import numpy, torch, tsn\n"
                 "from PIL import Image\n"
                 "from tsn.training import list_presets\n"
                 "print(tsn.__file__)\n"
                 "print(' '.join(list_presets()))\n"
                 "torch.manual_seed(0)\n"
                 "tsn.save_pretrained(tsn.create_model('tsn_r10t_synthetic'), 'model')\n"
                 "pixels = (numpy.random.default_rng(0).random((48, 64, 3)) * 255).astype('uint8')\n"
                 "Image.fromarray(pixels).save('photo.png')\n"], cwd=work, env=env).splitlines()
    where, presets = lines[0], lines[1].split()
    if not Path(where).resolve().is_relative_to(python.parent.parent.resolve()):
        sys.exit(f"wheel-check: tsn is imported from {where}, not from the new venv {python.parent.parent}")
    step(f"tsn imported from the new venv: {where}")
    missing = {p.stem for p in (PACKAGE / "configs").glob("*.yaml")} - set(presets)
    if missing:
        sys.exit(f"wheel-check: the installed presets lack {', '.join(sorted(missing))}")
    step(f"{len(presets)} presets listed; a model saved in the Hub layout")
    run([str(tsn), "predict", "--checkpoint", "model", "photo.png", "-o", "out", "--size", "64", "--workers", "0",
         "--no-progress"], cwd=work, env=env)
    written = sorted(str(p.relative_to(work / "out")) for p in (work / "out").rglob("*") if p.is_file())
    if not written:
        sys.exit("wheel-check: tsn predict wrote nothing")
    step(f"tsn predict (the saved folder as its checkpoint) wrote {len(written)} files")
    serve(tsn, work / "model", work / "photo.png", work, env)
    step("tsn serve answered on loopback: the page, its info and a prediction")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped check still stops its server and cleans up
    work = Path(tempfile.mkdtemp(prefix="tsn-wheel-check-"))
    try:
        wheel, sdist = build(work / "dist")
        step(f"built and checked {wheel.name} and {sdist.name}")
        check_contents(wheel)
        step("the wheel carries the presets, the page and py.typed; licence MIT (SPDX)")
        python = make_venv(work / "venv", wheel)
        step(f"installed into a fresh venv at {work / 'venv'}")
        (work / "use").mkdir()
        smoke(python, work / "use")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step("done")


if __name__ == "__main__":
    main()
