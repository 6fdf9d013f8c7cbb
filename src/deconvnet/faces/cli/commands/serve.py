"""``deconvnet serve``: the live explorer in the browser (FastAPI + uvicorn).

Choose or upload an image, see a layer's maps as a grid, click one to see its projection
and receptive field; with --scan, the unit's top-k from that scan beside it, linked to
the scan's static site (built at start-up). The model is fixed at start-up. Binds
127.0.0.1 unless --host says otherwise (anything not loopback is reachable from the
network: a warning is printed); it answers only requests addressed to localhost, the
loopback address or --host itself. Needs the explorer extra: pip install 'deconvnet[explorer]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys
import tempfile
from pathlib import Path

from deconvnet.engine.receptive import layer_table
from deconvnet.errors import InputError
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import int_in, real_in
from deconvnet.faces.cli._rules import (
    add_activations_argument,
    add_precision_argument,
    faces_precision,
)
from deconvnet.faces.cli.commands.site import check_weights, measure
from deconvnet.faces.site.build import build_site, scan_manifest
from deconvnet.faces.site.sections import SCAN_SECTIONS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 20
MAX_PORT = 65535
MIN_UPLOAD_MB, MAX_UPLOAD_MB = 0.001, 1024
"""Uploads from 1 kB to 1 GB: any photo, yet below what one decode may allocate."""
EXTRA_MODULES = ("fastapi", "uvicorn", "python_multipart")
INSTALL_HINT = "deconvnet serve needs the explorer extra: pip install 'deconvnet[explorer]'"
DESCRIPTION = """deconvnet serve: the live explorer in the browser (FastAPI + uvicorn).

Choose or upload an image, see a layer's maps as a grid, click one to see its projection
and receptive field; with --scan, the unit's top-k from that scan beside it, linked to
the scan's static site (built at start-up). The model is fixed at start-up. Binds
127.0.0.1 unless --host says otherwise (anything not loopback is reachable from the
network: a warning is printed); it answers only requests addressed to localhost, the
loopback address or --host itself. Needs the explorer extra: pip install 'deconvnet[explorer]'.
"""
EXAMPLES = """examples:
  deconvnet serve                                   # default model, upload photos
  deconvnet serve --scan scan/ --images photos/ --port 8080
  deconvnet serve --caffe deploy.prototxt net.caffemodel --scan scan/
"""
SUMMARY = "the live explorer: feature maps and projections in the browser"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "serve", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_model_arguments(parser)
    parser.add_argument(
        "--scan",
        type=Path,
        default=None,
        help="a 'deconvnet topk' --out folder whose top-k to show (default: none)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="a folder of images to offer (default: none, uploads only)",
    )
    add_activations_argument(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind")
    parser.add_argument(
        "--port", type=int_in(1, MAX_PORT), default=DEFAULT_PORT, help="port to bind"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=real_in(MIN_UPLOAD_MB, MAX_UPLOAD_MB),
        default=DEFAULT_MAX_UPLOAD_MB,
        help="upload size cap in MB",
    )
    add_precision_argument(parser)


def require_extra() -> None:
    """One line saying what to install when the explorer's packages are missing."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, a ``--host`` that does not resolve or cannot be bound here
    (before the model loads; uvicorn would otherwise exit with its own log lines)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # socket.gaierror, an IDNA-invalid name
        raise InputError(f"--host {host!r} does not resolve: {_reason(error)}") from error
    family, kind, protocol, _, address = found[0]
    try:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return " ".join(text.split()) or type(error).__name__


def run(args: argparse.Namespace) -> int:
    """Load the model, build the scan's site, serve until interrupted."""
    require_extra()
    import uvicorn

    from deconvnet.faces.explorer.app import create_app
    from deconvnet.faces.explorer.security import JsonErrorsH11Protocol
    from deconvnet.faces.explorer.session import Explorer

    check_address(args.host, args.port)

    if args.images is not None and not args.images.is_dir():
        raise InputError(f"--images {args.images} is not a folder")
    if args.scan is not None and not args.scan.is_dir():
        raise InputError(f"--scan {args.scan} is not a folder")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    loaded = load_model(args)
    explorer = Explorer(
        loaded.model,
        loaded.preprocessing,
        name=loaded.name,
        aliases=loaded.layer_aliases,
        images_dir=args.images,
        activations=args.activations,
        precision=faces_precision(args),
    )
    if not is_loopback(args.host):
        print(
            f"warning: binding {args.host}, not loopback: anyone who can reach this machine "
            "can use the explorer",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="deconvnet-site-") as folder:
        site_dir = None
        if args.scan is not None:
            check_weights(loaded, scan_manifest(args.scan))
            size = loaded.preprocessing.input_size
            rows = layer_table(loaded.model, (1, 3, *size), device=loaded.device)
            site = build_site(
                args.scan,
                folder,
                layer_rows=rows,
                input_size=size,
                aliases=loaded.layer_aliases,
                sections=[*SCAN_SECTIONS, *measure(args, loaded)],
            )
            site_dir = site.index.parent
        app = create_app(
            explorer,
            scan_dir=args.scan,
            site_dir=site_dir,
            max_upload=int(args.max_upload_mb * 1024 * 1024),
            host=args.host,
        )
        print(f"explorer: http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            http=JsonErrorsH11Protocol,
        )
    return 0
