"""The monitor's values as an OPC UA server (`ga monitor --opcua opc.tcp://HOST:PORT`; asyncua,
the `plant` extra).

Under Objects, one object per monitor, named after the monitor folder, with string node ids
`ns=<urn:ga-crystals:monitor>;s=<name>.<Variable>`:

    Running              Boolean   true while the monitor runs
    AcquisitionCounter   UInt32    frames done (ADI's name for the count of acquisitions)
    FrameName            String    the last frame's name
    ParticleCount        Double    particles in the frame (deposits left out)
    StaticDeposits       Double    particles flagged static (deposits on the window)
    <Class>Count         Double    per class: count,
    <Class>Fraction      Double    fraction,
    <Class>Fraction_Lo   Double    and its interval (monitor.ci_level)
    <Class>Fraction_Hi   Double
    D10, D50, D90        Double    number-weighted quantiles of the equivalent diameter
    SizeDistribution     Double[]  counts per size bin (monitor.size_bins; ADI's name)
    SizeBinEdges         Double[]  the bins' edges (ADI puts them in an axis definition)
    AlertActive/<rule>   Boolean   whether each alert rule holds

Sizes carry `EngineeringUnits` (µm with monitor.pixel_size_um, UNECE code 4H; else px, which
has no UNECE code). Each frame's values are written with the frame's time as SourceTimestamp
and a status: Good, Uncertain for a flagged frame (time_backwards), Bad for a skipped one.
The ADI (OPC 10020) ParticleSizeMonitorDeviceType is not instantiated: its type model (the
analyser state machine, channels, parameter sets) has nothing of the monitor's to carry, so
only its variable names are used where they fit.

Anonymous clients may read and subscribe, never write (no variable is writable). Security:
`None` by default (meant for 127.0.0.1); with a certificate and key (`cert`, `key`),
Basic256Sha256 with Sign and SignAndEncrypt only. The server runs on a thread of its own; a
port in use or a failed server is one warning and a retry with backoff, and the frames go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import urllib.parse

from ga.errors import GAError
from ga.monitoring.publish import Warned, backoff, is_loopback, utc

log = logging.getLogger(__name__)
NAMESPACE = "urn:ga-crystals:monitor"
UNITS = {"um": (4943692, "µm", "micrometre"), "px": (-1, "px", "pixel (no UNECE code)")}


def parse_url(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port or 4840
    except ValueError:
        port = -1
    if u.scheme != "opc.tcp" or not u.hostname or not 0 <= port <= 65535:
        raise GAError(f"{url!r}: give opc.tcp://HOST:PORT", arg="opcua")
    return u.hostname, port


def variable_names(layout: dict) -> list[str]:
    """The object's variable browse names for a monitor's layout (module docstring)."""
    names = ["Running", "AcquisitionCounter", "FrameName", "ParticleCount", "StaticDeposits"]
    for c in layout["classes"]:
        names += [f"{c}Count", f"{c}Fraction", f"{c}Fraction_Lo", f"{c}Fraction_Hi"]
    return names + ["D10", "D50", "D90", "SizeDistribution", "SizeBinEdges"] + \
        [f"AlertActive/{r}" for r in layout["rules"]]


class OpcUaServer:
    """A monitor hook that serves each frame's values over OPC UA (module docstring)."""

    def __init__(self, url: str, cert: str | None = None, key: str | None = None):
        import asyncua  # noqa: F401  (imported here, on the calling thread, not on the server's)

        logging.getLogger("asyncua").setLevel(logging.ERROR)  # its notes on the None policy are ours to say

        self.url = url
        self.host, self.port = parse_url(url)
        if bool(cert) != bool(key):
            raise GAError("--opcua-cert and --opcua-key go together", arg="opcua")
        for path in (cert, key):
            if path and not os.path.isfile(path):
                raise GAError(f"{path}: no such file", arg="opcua")
        if not cert and not is_loopback(self.host):
            log.warning("OPC UA on %s without a certificate: anyone on the network can read the values (security "
                        "policy None); give --opcua-cert and --opcua-key for Basic256Sha256", self.host)
        self.cert, self.key = cert, key
        self.layout: dict | None = None
        self.started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue | None = None
        self._done = threading.Event()
        self._warned = Warned(f"OPC UA server {url}")
        self._thread = threading.Thread(target=self._loop.run_forever, name="ga-opcua", daemon=True)

    def start(self, layout: dict) -> None:
        """Lay out the object for the monitor and start serving (the monitor's first step)."""
        self.layout = layout
        self._queue = asyncio.Queue()  # bound to self._loop when first awaited there
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._main(), self._loop)
        self.started.wait(10)

    def __call__(self, record) -> None:
        if self._queue is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, record.message)

    def close(self, wait: float = 5.0) -> None:
        """Running = false, then the server stops."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
            self._done.wait(wait)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(wait)

    # ------------------------------------------------------------------ on the server's thread

    async def _main(self) -> None:
        attempt, server = 0, None
        while server is None:
            try:
                server = await self._serve()
            except Exception as exc:  # noqa: BLE001  (a port in use, a bad certificate: retried)
                self._warned.warn(f"cannot start ({exc})")
                self.started.set()
                if await self._pause(backoff(attempt, 2.0, 60.0)):
                    self._done.set()
                    return
                attempt += 1
        self._warned.recovered("serving")
        self.started.set()
        try:
            while True:
                msg = await self._queue.get()
                if msg is None:
                    break
                await self._write(server, msg)
            await self._set(server, "Running", False)
        finally:
            await server.stop()
            self._done.set()

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` while the server is down, letting the frames' values go (the tables
        hold them); True when the monitor ended meanwhile."""
        end = self._loop.time() + seconds
        while (left := end - self._loop.time()) > 0:
            try:
                if await asyncio.wait_for(self._queue.get(), left) is None:
                    return True
            except asyncio.TimeoutError:
                return False
        return False

    async def _serve(self):
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(f"ga monitor {self.layout['name']}")
        if self.cert:
            await server.load_certificate(self.cert)
            await server.load_private_key(self.key)
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Basic256Sha256_Sign])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        self._nodes = await self._lay_out(server, idx)
        await server.start()
        log.info("OPC UA: serving %s at %s", self.layout["name"], self.url)
        return server

    async def _lay_out(self, server, idx) -> dict:
        from asyncua import ua

        name, lay = self.layout["name"], self.layout
        obj = await server.nodes.objects.add_object(ua.NodeId(name, idx), ua.QualifiedName(name, idx))
        alerts = await obj.add_folder(ua.NodeId(f"{name}.AlertActive", idx), ua.QualifiedName("AlertActive", idx))
        code, shown, described = UNITS[lay["unit"]]
        eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=code,
                              DisplayName=ua.LocalizedText(shown), Description=ua.LocalizedText(described))
        nodes = {}
        for var in variable_names(lay):
            parent, browse = (alerts, var.split("/", 1)[1]) if var.startswith("AlertActive/") else (obj, var)
            initial, kind = self._initial(var, lay)
            node = await parent.add_variable(ua.NodeId(f"{name}.{var}", idx), ua.QualifiedName(browse, idx),
                                             ua.Variant(initial, kind))
            if var in ("D10", "D50", "D90", "SizeBinEdges"):
                await node.add_property(0, "EngineeringUnits", eu)
            nodes[var] = node
        return nodes

    @staticmethod
    def _initial(var, lay):
        from asyncua import ua

        if var == "Running" or var.startswith("AlertActive/"):
            return var == "Running", ua.VariantType.Boolean
        if var == "AcquisitionCounter":
            return lay["resumed"], ua.VariantType.UInt32
        if var == "FrameName":
            return "", ua.VariantType.String
        if var == "SizeBinEdges":
            return [float(e) for e in lay["size_bins"]], ua.VariantType.Double
        if var == "SizeDistribution":
            return [0.0] * max(0, len(lay["size_bins"]) - 1), ua.VariantType.Double
        return float("nan"), ua.VariantType.Double

    async def _write(self, server, msg) -> None:
        from asyncua import ua

        status = {"good": ua.StatusCodes.Good, "uncertain": ua.StatusCodes.Uncertain, "bad": ua.StatusCodes.Bad}
        code, when = ua.StatusCode(status[msg["quality"]]), utc(msg["time"])
        v, u = msg["values"], msg["unit"]
        values = {"AcquisitionCounter": (msg["counter"], ua.VariantType.UInt32),
                  "FrameName": (msg["frame"], ua.VariantType.String),
                  "ParticleCount": v["particles"], "StaticDeposits": v["static_particles"],
                  "D10": v[f"d10_{u}"], "D50": v[f"d50_{u}"], "D90": v[f"d90_{u}"],
                  "SizeDistribution": ([float("nan") if n is None else n for n in msg["size_bins"]["counts"]],
                                       ua.VariantType.Double)}
        for c in self.layout["classes"]:
            for suffix, key in (("Count", "count"), ("Fraction", "fraction"), ("Fraction_Lo", "fraction_lo"),
                                ("Fraction_Hi", "fraction_hi")):
                values[f"{c}{suffix}"] = v[f"{c}_{key}"]
        for rule, on in msg["alerts_active"].items():
            values[f"AlertActive/{rule}"] = (bool(on), ua.VariantType.Boolean)
        for var, value in values.items():
            value, kind = value if isinstance(value, tuple) else (
                float("nan") if value is None else float(value), ua.VariantType.Double)
            good = code if var not in ("AcquisitionCounter", "FrameName") else ua.StatusCode(ua.StatusCodes.Good)
            await server.write_attribute_value(self._nodes[var].nodeid, ua.DataValue(
                ua.Variant(value, kind), StatusCode=good, SourceTimestamp=when, ServerTimestamp=utc(None)))

    async def _set(self, server, var, value) -> None:
        from asyncua import ua

        await server.write_attribute_value(self._nodes[var].nodeid, ua.DataValue(
            ua.Variant(value, ua.VariantType.Boolean), SourceTimestamp=utc(None), ServerTimestamp=utc(None)))
