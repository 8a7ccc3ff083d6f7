"""`confero serve`: flags → Settings → server.run(); `confero cert`: a self-signed certificate for a LAN try."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from confero import __version__, logs
from confero.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="confero", description="WebRTC media server speaking Ant Media's protocol")
    parser.add_argument("--version", action="version", version=f"confero {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server", add_help=True)
    Settings.argument_parser(serve)
    cert = sub.add_parser("cert", help="write a self-signed certificate and key for https/wss on a LAN")
    cert.add_argument(
        "--host", dest="hosts", nargs="+", required=True, metavar="NAME_OR_IP", help="names and addresses it is for"
    )
    cert.add_argument("--cert", default="confero-cert.pem", help="certificate file (default confero-cert.pem)")
    cert.add_argument("--key", default="confero-key.pem", help="key file (default confero-key.pem)")
    cert.add_argument("--days", type=int, default=None, help="days it is valid (default 825)")
    args = parser.parse_args(argv)
    if args.command == "cert":
        return write_cert(args)
    if args.command == "serve":
        try:
            settings = Settings.load(argv[1:])
        except SettingsError as exc:
            print(f"confero: {exc}", file=sys.stderr)
            return 2
        logs.configure(settings.log_level)
        from confero.server import run

        run(settings)
        return 0
    return 2  # pragma: no cover


def write_cert(args: argparse.Namespace) -> int:
    from confero import tls

    cert_file, key_file = Path(args.cert), Path(args.key)
    try:
        fingerprint, spki = tls.write_self_signed(
            args.hosts, cert_file, key_file, days=args.days if args.days is not None else tls.CERT_DAYS
        )
    except (OSError, ValueError) as exc:
        print(f"confero cert: {exc}", file=sys.stderr)
        return 2
    print(tls.trust_instructions(cert_file, key_file, fingerprint, spki, args.hosts, Settings().tls_port))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
