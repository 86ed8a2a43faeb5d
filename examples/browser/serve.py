r"""Serve index.html (the model card's transformers.js code) with an exported model, on 127.0.0.1 only.

    python examples/browser/serve.py --model exported/jina-reranker-v1-tiny-en \
        --transformers node_modules/@xenova/transformers

``--model`` is a folder written by ``jina-local-rerank export onnx`` (served as ``/models/reranker/``);
``--transformers`` the installed transformers.js package (``@xenova/transformers`` 2.x or
``@huggingface/transformers`` 3.x/4.x): its ``dist/`` folder (the browser bundle) is served as ``/transformers/``,
and the ``dist/`` of the onnxruntime-web it depends on (the wasm files) as ``/ort/``. Nothing is fetched from
elsewhere. Prints the page's address, then serves until interrupted. Standard library only.
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "index.html"
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}


class Handler(SimpleHTTPRequestHandler):
    """``/`` the page, ``/models/reranker/`` the export, ``/transformers/`` and ``/ort/`` the packages' ``dist/``."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, roots: dict[str, Path], **kwargs) -> None:  # noqa: ANN002, ANN003
        self.roots = roots
        super().__init__(*args, directory=str(PAGE.parent), **kwargs)

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path in ("/", "/index.html"):
            return str(PAGE)
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                target = (root / path[len(prefix) :]).resolve()
                if target.is_relative_to(root):
                    return str(target)
        return str(PAGE.parent / "not-found")  # a 404, never a file outside the roots

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


def onnxruntime_web_dist(package: Path) -> Path | None:
    """The ``dist/`` of the onnxruntime-web that Node.js's resolution finds from ``package``."""
    for folder in (package, *package.parents):
        dist = folder / "node_modules" / "onnxruntime-web" / "dist"
        if dist.is_dir():
            return dist
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a folder written by jina-local-rerank export onnx")
    parser.add_argument(
        "--transformers",
        type=Path,
        required=True,
        help="the transformers.js package folder, e.g. node_modules/@xenova/transformers",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args()
    model, dist = args.model.resolve(), (args.transformers / "dist").resolve()
    if not (model / "onnx" / "model.onnx").is_file():
        parser.error(f"--model {args.model}: no onnx/model.onnx (a folder written by jina-local-rerank export onnx)")
    if not (dist / "transformers.min.js").is_file():
        parser.error(f"--transformers {args.transformers}: no dist/transformers.min.js (the transformers.js package)")
    ort = onnxruntime_web_dist(args.transformers.resolve())
    if ort is None:
        parser.error(f"--transformers {args.transformers}: onnxruntime-web is not installed beside it (npm install)")
    roots = {"/models/reranker/": model, "/transformers/": dist, "/ort/": ort}
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), functools.partial(Handler, roots=roots))
    except OSError as exc:
        parser.error(f"--port {args.port}: cannot listen on 127.0.0.1 ({exc.strerror or exc})")
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
