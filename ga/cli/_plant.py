"""`ga monitor`'s plant options: the live dashboard (--serve), OPC UA (--opcua) and MQTT
(--mqtt), opened before the monitor starts and closed when it ends, however it ends."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Iterator

from ga.cli._base import Parser
from ga.errors import GAError

log = logging.getLogger(__name__)
EXTRA = "pip install 'ga-crystals[plant]'"


def add_arguments(p: Parser) -> None:
    g = p.add_argument_group("plant integration (ga.monitoring.dashboard, .opcua, .mqtt)")
    g.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve a live dashboard of the monitor folder at http://HOST:PORT/ (host 127.0.0.1 unless "
                        "given)")
    g.add_argument("--opcua", metavar="URL", help="publish each frame's values as an OPC UA server at URL, "
                   "opc.tcp://HOST:PORT (the plant extra)")
    g.add_argument("--opcua-cert", metavar="FILE", help="the OPC UA server's certificate (DER or PEM): security "
                   "policy Basic256Sha256 instead of None")
    g.add_argument("--opcua-key", metavar="FILE", help="the private key of --opcua-cert")
    g.add_argument("--mqtt", metavar="URL", help="publish each frame and alert to an MQTT broker, "
                   "mqtt://HOST:PORT/PREFIX (mqtts:// for TLS; the plant extra)")
    g.add_argument("--mqtt-user", metavar="USER", help="the broker's user name; the password is read from the "
                   "environment variable GA_MQTT_PASSWORD")
    g.add_argument("--mqtt-ca", metavar="FILE", help="CA certificates to check the broker's (TLS)")
    g.add_argument("--mqtt-cert", metavar="FILE", help="a client certificate for the broker (TLS)")
    g.add_argument("--mqtt-key", metavar="FILE", help="the private key of --mqtt-cert")


def check(parser: Parser, args: argparse.Namespace) -> None:
    from ga.monitoring.mqtt import parse_url as mqtt_url
    from ga.monitoring.opcua import parse_url as opcua_url
    from ga.monitoring.publish import host_port

    plant = args.serve or args.opcua or args.mqtt
    if plant and (args.show_detection or args.calibrate or args.truth or args.save_crops):
        parser.error("--serve, --opcua and --mqtt go with monitoring, not with the tuning modes")
    if (args.opcua_cert or args.opcua_key) and not args.opcua:
        parser.error("--opcua-cert and --opcua-key go with --opcua")
    if any((args.mqtt_user, args.mqtt_ca, args.mqtt_cert, args.mqtt_key)) and not args.mqtt:
        parser.error("--mqtt-user, --mqtt-ca, --mqtt-cert and --mqtt-key go with --mqtt")
    try:
        for value, parse in ((args.serve, host_port), (args.opcua, opcua_url), (args.mqtt, mqtt_url)):
            if value:
                parse(value)
    except GAError as exc:
        parser.error(str(exc))


def _needs(module: str, flag: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise GAError(f"{flag} needs the {module} package: {EXTRA}")


@contextlib.contextmanager
def publishing(args: argparse.Namespace, stale_seconds: float) -> Iterator[list]:
    """The hooks for ga.monitor (OPC UA, MQTT); the dashboard runs beside. All are closed on
    the way out, MQTT's "offline" published."""
    from ga.monitoring.publish import host_port

    if args.opcua:
        _needs("asyncua", "--opcua")
    if args.mqtt:
        _needs("paho", "--mqtt")
    opened, hooks = [], []
    try:
        if args.serve:
            from ga.monitoring.dashboard import Dashboard

            host, port = host_port(args.serve)
            board = Dashboard(args.out_dir, host, port, stale_seconds).start()
            opened.append(board)
            print(f"dashboard: {board.url}", file=sys.stderr, flush=True)
        if args.opcua:
            from ga.monitoring.opcua import OpcUaServer

            hooks.append(OpcUaServer(args.opcua, args.opcua_cert, args.opcua_key))
            opened.append(hooks[-1])
        if args.mqtt:
            from ga.monitoring.mqtt import MqttPublisher

            hooks.append(MqttPublisher(args.mqtt, args.mqtt_user, args.mqtt_ca, args.mqtt_cert, args.mqtt_key))
            opened.append(hooks[-1])
        yield hooks
    finally:
        for thing in reversed(opened):
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001  (closing one must not keep the others open)
                log.warning("closing %s: %s", type(thing).__name__, exc)
