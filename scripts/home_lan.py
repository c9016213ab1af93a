"""An emulated home network: each device its own network namespace, on a bridge.

The one script for it: the slow tests (tests/fixtures/home_lan.py adds their worker
helpers), `make bench` (benchmarks/bench_planner.py) and scripts/lan_demo.py import it;
run by hand it builds a network and waits, for experiments:

    sudo .venv/bin/python scripts/home_lan.py mini-pc:100 board    # NAME[:MBIT] ...

    with HomeLan() as lan:                       # needs root (CI runs as root)
        net = lan.network()                      # a bridge; this computer is net.host_ip
        dev = net.device("mini-pc", mbit=100)    # a namespace, veth on the bridge, tc tbf
        proc = dev.popen(["python", "-m", "core.cli", "worker", "--host", dev.ip],
                         cores=[1])              # runs inside the namespace, pinned

This computer (the master) stays in the root namespace and reaches every device over the
bridge, never through loopback: a device's own loopback is its own. Bandwidth is capped
with `tc tbf` in both directions (netem is missing here; latency comes from the comm
layer's link emulation). Addresses are 10.<a>.<b>.0/24 private ranges owned by the bridges
this module creates, so no traffic leaves the machine. Everything it made is removed on
exit, and leftovers of a killed run (names carry the pid) are removed on the next start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field

PREFIX = "tpl"  # namespaces "tpl<pid>-<name>", links "tpl<pid>b<n>" / "tpl<pid>v<n>"


def available() -> str | None:
    """None when namespaces can be made here; else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    try:
        _ip("netns", "list")
    except subprocess.CalledProcessError as e:
        return f"ip netns does not work here: {e.stderr.strip()}"
    return None


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _ip(*args: str) -> str:
    return _run("ip", *args)


def _tbf(dev: str, mbit: float, netns: str | None = None) -> None:
    rate = f"{mbit:g}mbit"
    burst = f"{max(32, int(mbit * 1000 / 8 / 250) )}kb"  # ~4 ms of traffic at rate
    cmd = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
           "burst", burst, "latency", "50ms"]
    _run(*(["ip", "netns", "exec", netns] if netns else []), *cmd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> None:
    """Remove namespaces and links a killed run left behind (their pid is gone)."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = name[len(PREFIX):].split("-")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for line in _ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        pid = name[len(PREFIX):].split("b")[0].split("v")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@dataclass
class Device:
    """One device: a namespace with one interface on its network's bridge."""

    name: str
    netns: str
    ip: str
    network: Network
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, cmd: list[str], cores: list[int] | None = None,
              **kwargs) -> subprocess.Popen:
        """Run `cmd` inside this device's namespace (pinned to `cores` when given)."""
        pin = ["taskset", "-c", ",".join(map(str, cores))] if cores else []
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *pin, *cmd], **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, cmd: list[str]) -> str:
        return _run("ip", "netns", "exec", self.netns, *cmd)

    def firewall(self, to_ip: str, answer_from_ports: list[int]) -> None:
        """Refuse every connection this device opens to `to_ip` (as a strict firewall
        on either side would), but keep answering on its own `answer_from_ports`."""
        for prio, port in enumerate(answer_from_ports, start=100):
            _ip("-n", self.netns, "rule", "add", "to", to_ip, "ipproto", "tcp", "sport",
                str(port), "table", "main", "prio", str(prio))
        _ip("-n", self.netns, "rule", "add", "to", to_ip, "prio", "200", "unreachable")


@dataclass
class Network:
    """A bridge (a home's Wi-Fi or Ethernet); this computer is `host_ip` on it."""

    lan: HomeLan
    index: int
    bridge: str
    subnet: str  # "10.a.b"
    devices: list[Device] = field(default_factory=list)

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    def device(self, name: str, mbit: float | None = None) -> Device:
        """A new device on this network, its link capped at `mbit` both ways."""
        n = self.lan.next_link()
        netns = f"{self.lan.tag}-{name}"
        outer, inner = f"{self.lan.tag}v{n}", f"{self.lan.tag}i{n}"
        ip = f"{self.subnet}.{len(self.devices) + 2}"
        _ip("netns", "add", netns)
        self.lan.netns.append(netns)
        # an earlier HomeLan of this process used these names; its links may still be
        # going away (namespace deletion is asynchronous)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("-n", netns, "link", "set", inner, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        if mbit:
            _tbf(outer, mbit)  # towards the device
            _tbf("eth0", mbit, netns)  # from the device
        dev = Device(name, netns, ip, self)
        self.devices.append(dev)
        return dev


class HomeLan:
    """Networks and devices made by this process; `close()` (or `with`) removes them."""

    def __init__(self) -> None:
        why = available()
        if why is not None:
            raise RuntimeError(why)
        clean_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.netns: list[str] = []
        self.networks: list[Network] = []
        self._links = 0

    def next_link(self) -> int:
        self._links += 1
        return self._links

    def network(self) -> Network:
        """A new bridge with its own /24 (10.<177+pid%50>.<n>.0/24) and this computer on it."""
        n = len(self.networks) + 1
        bridge = f"{self.tag}b{n}"
        subnet = f"10.{177 + os.getpid() % 50}.{n}"
        _ip("link", "add", bridge, "type", "bridge")
        net = Network(self, n, bridge, subnet)
        self.networks.append(net)
        _ip("addr", "add", f"{net.host_ip}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        return net

    def close(self) -> None:
        for net in self.networks:
            for dev in net.devices:
                for p in dev.procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait(timeout=10)
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for net in self.networks:
            subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)
        self.netns, self.networks = [], []

    def __enter__(self) -> HomeLan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assign_cores(devices: int, cpus: int | None = None) -> list[list[int]]:
    """Cores for this computer (index 0) and each emulated device: one core each, round
    robin. With fewer cores than devices, devices share: on a 2-core machine this computer
    keeps core 0 and every other device runs on core 1 (their ranks then take turns on
    it, as if each device were that much slower; a device measures its speed on the core
    it will run on, so the planner sees the same)."""
    n = cpus or len(os.sched_getaffinity(0))
    if n <= 1:
        return [[0]] * (devices + 1)
    return [[0]] + [[1 + i % (n - 1)] for i in range(devices)]


def main(argv: list[str]) -> int:
    """Build a network with the devices named (NAME[:MBIT]), print them, wait for Ctrl-C."""
    why = available()
    if why is not None:
        print(f"cannot emulate a network here: {why}", file=sys.stderr)
        return 2
    with HomeLan() as lan:
        net = lan.network()
        print(f"this computer: {net.host_ip} on bridge {net.bridge}")
        for spec, cores in zip(argv, assign_cores(len(argv))[1:], strict=True):
            name, _, mbit = spec.partition(":")
            dev = net.device(name, mbit=float(mbit) if mbit else None)
            print(f"{dev.name}: {dev.ip}, namespace {dev.netns}, suggested cores {cores} "
                  f"(ip netns exec {dev.netns} taskset -c {cores[0]} CMD)")
        print("Ctrl-C removes everything", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
