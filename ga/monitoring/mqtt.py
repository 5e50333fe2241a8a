"""The monitor's frames over MQTT (`ga monitor --mqtt mqtt://HOST:PORT/PREFIX`; paho-mqtt, the
`plant` extra).

Topics, all under PREFIX:

- `PREFIX/frame`: one JSON message per frame, `ga.monitoring.publish.message` (QoS 1);
- `PREFIX/alert`: one JSON message per alert fired: rule, column, value, threshold, frame,
  time (QoS 1);
- `PREFIX/status`: "online" once connected, "offline" when the monitor stops, retained; the
  broker publishes "offline" itself (the client's last will) when the monitor dies or its
  connection is lost.

`mqtts://` connects with TLS (the system's CAs, or `ca`; a client certificate with `cert`
and `key`); a user name with the password from the environment (never the command line,
which the audit trail records). Publishing never waits: paho's own thread sends, and while
the broker is away it keeps up to `QUEUED` messages and reconnects with backoff (1 s to 30 s);
the frames are written to the folder's tables whatever the broker does.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.parse

from ga.errors import GAError
from ga.monitoring.publish import Warned

log = logging.getLogger(__name__)
QUEUED = 10_000  # messages kept while the broker is away (about 3 h at one frame a second)
PASSWORD_ENV = "GA_MQTT_PASSWORD"


def parse_url(url: str) -> tuple[str, str, int, str]:
    """mqtt[s]://HOST[:PORT]/PREFIX -> (scheme, host, port, prefix); a GAError when it is not one."""
    u = urllib.parse.urlsplit(url)
    prefix = u.path.strip("/")
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname or not prefix or any(c in prefix for c in "#+"):
        raise GAError(f"{url!r}: give mqtt://HOST[:PORT]/PREFIX (mqtts:// for TLS); the prefix without # or +",
                      arg="mqtt")
    try:
        port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    except ValueError:
        raise GAError(f"{url!r}: the port must be a number from 1 to 65535", arg="mqtt") from None
    return u.scheme, u.hostname, port, prefix


class MqttPublisher:
    """A monitor hook that publishes each frame (module docstring)."""

    def __init__(self, url: str, user: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None):
        import paho.mqtt.client as mqtt

        scheme, self.host, self.port, self.prefix = parse_url(url)
        for path in (ca, cert, key):
            if path and not os.path.isfile(path):
                raise GAError(f"{path}: no such file", arg="mqtt")
        self.status = f"{self.prefix}/status"
        self._warned = Warned(f"MQTT broker {self.host}:{self.port}")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"ga-monitor-{socket.gethostname()}-{os.getpid()}")
        self.client.max_queued_messages_set(QUEUED)
        self.client.reconnect_delay_set(1, 30)
        self.client.will_set(self.status, "offline", qos=1, retain=True)
        if user:
            self.client.username_pw_set(user, os.environ.get(PASSWORD_ENV))
        if scheme == "mqtts" or ca or cert:
            self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._failed
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()

    def _connected(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._warned.warn(f"refused the connection ({reason})")
            return
        client.publish(self.status, "online", qos=1, retain=True)
        self._warned.recovered("connected, publishing again")
        log.info("MQTT: connected to %s:%d, publishing under %s/", self.host, self.port, self.prefix)

    def _disconnected(self, client, userdata, flags, reason, properties) -> None:
        if reason != 0 and reason.is_failure:
            self._warned.warn(f"connection lost ({reason})")

    def _failed(self, client, userdata) -> None:
        self._warned.warn("unreachable")

    def start(self, layout: dict) -> None:
        self.name = layout["name"]

    def __call__(self, record) -> None:
        msg = record.message
        self.client.publish(f"{self.prefix}/frame", json.dumps(msg, default=str), qos=1)
        for a in msg["alerts"]:
            self.client.publish(f"{self.prefix}/alert", json.dumps({**a, "frame": msg["frame"], "time": msg["time"]},
                                                                   default=str), qos=1)

    def close(self, wait: float = 3.0) -> None:
        """Publish "offline" (retained), give the queue up to `wait` seconds, disconnect."""
        info = self.client.publish(self.status, "offline", qos=1, retain=True)
        if self.client.is_connected():
            try:
                info.wait_for_publish(wait)
            except (RuntimeError, ValueError):  # the connection went meanwhile: the will says offline
                pass
        self.client.disconnect()
        self.client.loop_stop()
