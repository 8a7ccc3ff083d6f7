"""`confero serve`: flags → Settings → server.run()."""

from __future__ import annotations

import argparse
import sys

from confero import __version__, logs
from confero.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="confero", description="WebRTC media server speaking Ant Media's protocol")
    parser.add_argument("--version", action="version", version=f"confero {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server", add_help=True)
    Settings.argument_parser(serve)
    args = parser.parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
