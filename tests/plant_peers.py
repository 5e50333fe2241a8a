"""The plant's side of the monitor's tests, as real peers: a mosquitto broker started (and
killed) by the test, a paho subscriber, and an asyncua client subscribed to the monitor's
variables. Each runs on its own thread and records what it received."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
NO_BROKER = "no mosquitto on this machine (Debian: apt-get install mosquitto; .ci/run installs it as root)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, seconds, what, every=0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"waited {seconds} s for {what}")


class Broker:
    """mosquitto on 127.0.0.1:port, anonymous, no persistence."""

    def __init__(self, folder, port):
        self.port, self.conf, self.proc = port, os.path.join(folder, "mosquitto.conf"), None
        with open(self.conf, "w") as fh:
            fh.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "mosquitto to listen")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Subscriber:
    """A paho client subscribed to PREFIX/# (QoS 1), resubscribing after each reconnect:
    `messages` holds (topic, payload, retained) in arrival order, `connects` counts connections."""

    def __init__(self, port, prefix):
        import paho.mqtt.client as mqtt

        self.messages, self.connects, self.prefix = [], 0, prefix
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = self._connected
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _connected(self, client, userdata, flags, reason, properties):
        client.subscribe(f"{self.prefix}/#", qos=1)
        self.connects += 1

    def frames(self):
        return [json.loads(p)["frame"] for t, p, _ in self.messages if t == f"{self.prefix}/frame"]

    def status(self):
        return [(p, r) for t, p, r in self.messages if t == f"{self.prefix}/status"]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class OpcUaWatcher:
    """An asyncua client on its own thread: connects (retrying while the server starts),
    subscribes to `variables` of the monitor object `name` with the trigger StatusValueTimestamp
    (so a frame with the same value as the one before is a notification too) and records
    {variable: [(value, status code, SourceTimestamp)]}."""

    def __init__(self, url, name, variables):
        self.url, self.name, self.variables = url, name, variables
        self.seen = {v: [] for v in variables}
        self.subscribed, self.error = threading.Event(), None
        self._stop = self._loop = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    async def _main(self):
        from asyncua import Client, ua

        self._stop, self._loop = asyncio.Event(), asyncio.get_running_loop()
        deadline = time.monotonic() + 300
        while True:
            client = Client(self.url, timeout=5)
            try:
                await client.connect()
                break
            except (OSError, asyncio.TimeoutError, ua.UaError) as exc:
                if time.monotonic() > deadline:
                    self.error = exc
                    self.subscribed.set()
                    return
                await asyncio.sleep(0.5)
        try:
            idx = await client.get_namespace_index("urn:ga-crystals:monitor")
            nodes = {client.get_node(ua.NodeId(f"{self.name}.{v}", idx)): v for v in self.variables}
            watcher = self

            class Handler:
                def datachange_notification(self, node, val, data):
                    dv = data.monitored_item.Value
                    watcher.seen[nodes[node]].append((val, dv.StatusCode.value, dv.SourceTimestamp))

            sub = await client.create_subscription(50, Handler())
            # the public subscribe_data_change takes no filter; this is the same call with one
            await sub._subscribe(list(nodes), mfilter=ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValueTimestamp), queuesize=1000, sampling_interval=0)
            self.subscribed.set()
            await self._stop.wait()
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            self.error = exc
            self.subscribed.set()
        finally:
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001  (the server may be gone first)
                pass

    def close(self):
        if self._stop is not None and self._thread.is_alive():  # set on its own loop (not thread-safe)
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop ended in between (an error, kept in self.error)
                pass
        self._thread.join(15)
