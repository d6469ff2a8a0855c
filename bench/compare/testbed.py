"""The namespace testbed of the comparison: commands, processes we start (and stop, by PID),
namespaces, and the clean-up that runs even on failure or Ctrl-C.

Three namespaces per configuration and round, ``<prefix><pid>-<n>-c`` (client), ``-r`` (the
router or bridge under test) and ``-s`` (server), joined by two veth pairs: ``c0`` (client) to
``r-cli`` (router) and ``s0`` (server) to ``r-srv`` (router). Addresses come from 198.18.0.0/15
and 2001:2::/48 only.
"""

import os
import re
import signal
import subprocess
import time

PREFIX = "fwcmp"
DEVNULL = subprocess.DEVNULL

# Router layout (every configuration but the bridge): two subnets, the router .1 / ::1 on each.
ROUTER = {
    "client": ("198.18.1.2/24", "2001:2:0:1::2/64"),
    "gw_cli": ("198.18.1.1/24", "2001:2:0:1::1/64"),
    "gw_srv": ("198.19.1.1/24", "2001:2:0:2::1/64"),
    "server": ("198.19.1.2/24", "2001:2:0:2::2/64"),
}
# Bridge layout: one segment.
BRIDGE = {
    "client": ("198.18.2.2/24", "2001:2:0:3::2/64"),
    "server": ("198.18.2.3/24", "2001:2:0:3::3/64"),
}

# The churn's source address (router layout): OVS puts its flows in a zone of their own.
CHURN_SRC = "198.18.1.3"
# The UDP ports the generator sends to; the server counts (and drops) them at its door.
UDP_PORTS = (9, 25)
IPERF_PORT = 5201
CONN_PORT = 7000


class Failed(Exception):
    """A step of the set-up or of a measurement failed; the message says which."""


def run(argv, ns=None, timeout=60, check=True, input=None, env=None, cwd=None):
    """Runs ``argv`` (in namespace ``ns``, in directory ``cwd``), bounded by ``timeout`` seconds;
    returns the CompletedProcess (text). Raises Failed on a non-zero exit when ``check``."""
    full = ["ip", "netns", "exec", ns] + list(argv) if ns else list(argv)
    try:
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{' '.join(full)}: no answer after {timeout} s") from e
    if check and p.returncode != 0:
        why = (p.stderr.strip() or p.stdout.strip())[-800:]
        raise Failed(f"{' '.join(full)}: exit {p.returncode}: {why}")
    return p


def signal_group(p, sig):
    """Sends ``sig`` to the process group of ``p``: a process we started in a session of its
    own (its PID is the group's ID), and what it forked, nothing else."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Reaper:
    """Everything this run started: processes (stopped by their PID), namespaces, and undo
    commands. ``cleanup`` is safe to call more than once."""

    def __init__(self):
        self.procs = []
        self.namespaces = []

    def spawn(self, argv, ns=None, stdout=None, stderr=None, env=None, cwd=None):
        """Starts ``argv`` (in ``ns``; ``ip netns exec`` execs it, so the PID is the program's)
        in a session of its own, so a Ctrl-C at the terminal reaches only us and we stop it."""
        full = ["ip", "netns", "exec", ns] + list(argv) if ns else list(argv)
        p = subprocess.Popen(
            full,
            stdin=DEVNULL,
            stdout=stdout if stdout is not None else DEVNULL,
            stderr=stderr if stderr is not None else DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self, p, grace=5.0, sig=signal.SIGTERM):
        """Stops process ``p`` (ours): ``sig``, then SIGKILL after ``grace`` seconds."""
        if p.returncode is None and p.poll() is None:
            try:
                signal_group(p, sig)
                p.wait(grace)
            except (ProcessLookupError, ChildProcessError):
                pass
            except subprocess.TimeoutExpired:
                signal_group(p, signal.SIGKILL)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if p in self.procs:
            self.procs.remove(p)

    def wait_rusage(self, p, timeout):
        """Waits (at most ``timeout`` s) for ``p`` to exit; returns (exit code, CPU seconds it
        used: user + system, from wait4), or (None, None) if it is still running."""
        end = time.monotonic() + timeout
        while True:
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                return (p.returncode, None)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                if p in self.procs:
                    self.procs.remove(p)
                return (p.returncode, ru.ru_utime + ru.ru_stime)
            if time.monotonic() >= end:
                return (None, None)
            time.sleep(0.02)

    def add_namespace(self, name):
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def del_namespace(self, name):
        run(["ip", "netns", "del", name], check=False)
        if name in self.namespaces:
            self.namespaces.remove(name)

    def cleanup(self):
        for p in reversed(list(self.procs)):
            self.stop(p, grace=3.0)
        for ns in reversed(list(self.namespaces)):
            self.del_namespace(ns)


def remove_stale_namespaces():
    """Namespaces a previous run of this harness left behind (its PID is gone): removed."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{PREFIX}(\d+)-", name)
        if m and not pid_alive(int(m.group(1))):
            run(["ip", "netns", "del", name], check=False)


def mac(ns, dev):
    out = run(["ip", "-o", "link", "show", "dev", dev], ns=ns).stdout
    m = re.search(r"link/ether ([0-9a-f:]{17})", out)
    if not m:
        raise Failed(f"no MAC address on {dev} in {ns}")
    return m.group(1)


def dev_stat(ns, dev, name):
    return int(run(["cat", f"/sys/class/net/{dev}/statistics/{name}"], ns=ns).stdout.strip())


def offloads(ns, dev, on):
    """Transmit checksum offload, TSO and GSO on or off, GRO off (veth GRO switches the
    receive path to NAPI: not what the defaults run)."""
    v = "on" if on else "off"
    return run(["ethtool", "-K", dev, "tx", v, "tso", v, "gso", v, "gro", "off"], ns=ns, check=False)


class Testbed:
    """Client, router and server namespaces with the two veth pairs, offloads off, the server's
    counter of generated UDP (an nftables netdev ingress rule that counts and drops it, so the
    server answers nothing) and, started on demand, the servers of the workloads."""

    def __init__(self, reaper, tag, layout):
        self.reaper = reaper
        self.layout = layout
        self.procs = []
        base = f"{PREFIX}{os.getpid()}-{tag}"
        self.c, self.r, self.s = f"{base}-c", f"{base}-r", f"{base}-s"
        for ns in (self.c, self.r, self.s):
            reaper.add_namespace(ns)
        run(["ip", "link", "add", "c0", "netns", self.c, "type", "veth", "peer", "name", "r-cli", "netns", self.r])
        run(["ip", "link", "add", "s0", "netns", self.s, "type", "veth", "peer", "name", "r-srv", "netns", self.r])
        a = ROUTER if layout == "router" else BRIDGE
        self.client_v4, self.client_v6 = (x.split("/")[0] for x in a["client"])
        self.server_v4, self.server_v6 = (x.split("/")[0] for x in a["server"])
        self.churn_src = CHURN_SRC if layout == "router" else "198.18.2.4"
        for ns, dev, key in ((self.c, "c0", "client"), (self.s, "s0", "server")):
            for addr in a[key]:
                extra = ["nodad"] if ":" in addr else []
                run(["ip", "-n", ns, "addr", "add", addr, "dev", dev] + extra)
        for ns, dev in self.ports():
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            offloads(ns, dev, on=False)
        if layout == "router":
            run(["ip", "-n", self.c, "route", "add", "default", "via", "198.18.1.1"])
            run(["ip", "-n", self.c, "-6", "route", "add", "default", "via", "2001:2:0:1::1"])
            run(["ip", "-n", self.s, "route", "add", "default", "via", "198.19.1.1"])
            run(["ip", "-n", self.s, "-6", "route", "add", "default", "via", "2001:2:0:2::1"])
        # The connection-rate client may use every port.
        run(["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"], ns=self.c)
        lo, hi = UDP_PORTS
        rules = (
            "table netdev cmp {\n chain in {\n  type filter hook ingress device \"s0\" priority 0;\n"
            f"  udp dport {lo}-{hi} counter drop\n }}\n}}\n"
        )
        run(["nft", "-f", "-"], ns=self.s, input=rules)
        self.macs = {
            "c0": mac(self.c, "c0"),
            "s0": mac(self.s, "s0"),
            "r-cli": mac(self.r, "r-cli"),
            "r-srv": mac(self.r, "r-srv"),
        }

    def ports(self):
        return [(self.c, "c0"), (self.r, "r-cli"), (self.r, "r-srv"), (self.s, "s0")]

    def set_offloads(self, on):
        for ns, dev in self.ports():
            offloads(ns, dev, on)

    def router_addresses(self):
        """The kernel's own addresses on the router's veths (kernel and TUN configurations)."""
        for dev, key in (("r-cli", "gw_cli"), ("r-srv", "gw_srv")):
            for addr in ROUTER[key]:
                extra = ["nodad"] if ":" in addr else []
                run(["ip", "-n", self.r, "addr", "add", addr, "dev", dev] + extra)

    def kernel_forwarding(self):
        """The router namespace's kernel forwards IPv4 and IPv6, without reverse-path filtering
        (configurations where the kernel routes: kernel, nft, TUN)."""
        run(
            [
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
            ns=self.r,
        )

    def quiet_router_stack(self):
        """The router namespace's own stack stays out of the way (configurations whose forwarder
        reads the ports through packet sockets: ferrowall's router and bridge, OVS): no
        addresses, no IPv6, no forwarding, and an ingress drop on both ports (nftables' netdev
        ingress hook, as a tc ingress drop would: both run after the packet sockets have had their
        copy) that spares the stack every frame (the issue's point 5; measured in
        bench/README.md). `FWCMP_NO_INGRESS_DROP=1` leaves it out, to measure without."""
        run(
            [
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=0",
            ],
            ns=self.r,
        )
        if os.environ.get("FWCMP_NO_INGRESS_DROP"):
            return
        chains = "".join(
            f'chain in_{d.replace("-", "_")} {{ type filter hook ingress device "{d}" priority 0; policy drop; }}\n'
            for d in ("r-cli", "r-srv")
        )
        run(["nft", "-f", "-"], ns=self.r, input=f"table netdev quiet {{\n{chains}}}\n")

    def generator_dst_mac(self):
        """Where the client's generated frames go: the router's port, or the server across the
        bridge."""
        return self.macs["r-cli"] if self.layout == "router" else self.macs["s0"]

    def udp_counter(self):
        out = run(["nft", "list", "table", "netdev", "cmp"], ns=self.s).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0

    def ping(self, v6=False, count=3):
        """Pings the server from the client; the number of answers."""
        target = self.server_v6 if v6 else self.server_v4
        p = run(["ping", "-c", str(count), "-i", "0.2", "-W", "1", target], ns=self.c, check=False, timeout=15)
        m = re.search(r"(\d+) received", p.stdout)
        return int(m.group(1)) if m else 0

    def spawn(self, ns, argv, **kw):
        """Starts ``argv`` in namespace ``ns``; it is stopped (by PID) when the testbed goes."""
        p = self.reaper.spawn(argv, ns=ns, **kw)
        self.procs.append(p)
        return p

    def rtt(self, count=50):
        """The average round trip client → server in ms, one ping at a time (``-i 0.02``)."""
        p = run(["ping", "-q", "-c", str(count), "-i", "0.02", "-W", "1", self.server_v4], ns=self.c, check=False,
                timeout=30)
        m = re.search(r"= [\d.]+/([\d.]+)/", p.stdout)
        return float(m.group(1)) if m else None

    def destroy(self):
        for p in reversed(self.procs):
            self.reaper.stop(p, grace=3.0)
        self.procs.clear()
        for ns in (self.c, self.r, self.s):
            self.reaper.del_namespace(ns)
