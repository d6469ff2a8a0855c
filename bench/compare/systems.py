"""The configurations under comparison, each set up in the router namespace of a fresh testbed:

* ``kernel-fwd``: the kernel forwards, no rules (conntrack is never loaded in the namespace).
* ``kernel-nft``: the kernel forwards through an nftables ``inet`` table whose forward chain
  accepts ``ct state established,related`` and ``ct state new`` (policy drop).
* ``ovs``: Open vSwitch's userspace datapath (``datapath_type=netdev``): ovsdb-server and
  ovs-vswitchd started here, in the router namespace, with their own database, run and log
  directories; the router's veths are its ports; OpenFlow flows route (L3): ``ct(table=1)``, then
  ``ct(commit)`` for new connections, ``+est``/``+rel`` allowed, Ethernet addresses rewritten and
  ``dec_ttl``, as an L3 router does (the client and server have a static neighbour entry for their
  gateway: these flows answer no ARP or neighbour solicitation).
* ``fw-router``, ``fw-tun``, ``fw-bridge`` with ``workers`` 1 and 2: ferrowall (release build)
  as an L3 router over AF_PACKET, as the filter of the kernel's routing through a TUN device, and
  as a bridge, with the same rule set as the kernel's.
"""

import os
import re
import time

from testbed import CHURN_SRC, Failed, run

FW_RULES = """chain forward {
  policy drop
  ct state established,related accept
  ct state new accept
  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
}
"""

NFT_RULES = """table inet cmp {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new accept
  }
}
"""

# The UDP timeout for unreplied flows in every tracker, by default (the kernel's, ferrowall's).
UDP_UNREPLIED_DEFAULT = 30


def proc_cpu_ticks(pid):
    """utime + stime of process ``pid`` (all its threads), in clock ticks; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


class System:
    name = ""
    label = ""
    layout = "router"
    kind = "kernel"
    workers = None

    def setup(self, tb, work, bins):
        raise NotImplementedError

    def teardown(self):
        pass

    def dut_pids(self):
        """The processes that do the forwarding (their CPU is the component's)."""
        return []

    def table_count(self):
        """Connections in the tracker's table, or None where there is no tracker."""
        return None

    def set_udp_timeout(self, secs):
        """Sets the timeout of unreplied UDP flows (``None``: back to the default)."""

    def stats(self):
        """The tracker's own counters, as text, for the record."""
        return None


class KernelFwd(System):
    name = "kernel-fwd"
    label = "kernel, no rules"

    def setup(self, tb, work, bins):
        self.tb = tb
        tb.router_addresses()
        tb.kernel_forwarding()


class KernelNft(KernelFwd):
    name = "kernel-nft"
    label = "kernel nft conntrack"

    def setup(self, tb, work, bins):
        super().setup(tb, work, bins)
        run(["nft", "-f", "-"], ns=tb.r, input=NFT_RULES)

    def table_count(self):
        p = run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], ns=self.tb.r, check=False)
        return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip().isdigit() else None

    def set_udp_timeout(self, secs):
        v = UDP_UNREPLIED_DEFAULT if secs is None else secs
        run(["sysctl", "-qw", f"net.netfilter.nf_conntrack_udp_timeout={v}"], ns=self.tb.r)

    def stats(self):
        return run(["conntrack", "-S"], ns=self.tb.r, check=False).stdout


class Ovs(System):
    name = "ovs"
    label = "OVS netdev + ct()"
    kind = "ovs"

    def setup(self, tb, work, bins):
        self.tb = tb
        d = os.path.join(work, "ovs")
        self.dirs = {k: os.path.join(d, k) for k in ("etc", "run", "log")}
        for p in self.dirs.values():
            os.makedirs(p, exist_ok=True)
        self.env = dict(
            os.environ,
            OVS_RUNDIR=self.dirs["run"],
            OVS_LOGDIR=self.dirs["log"],
            OVS_DBDIR=self.dirs["etc"],
            OVS_SYSCONFDIR=self.dirs["etc"],
        )
        self.db = f"unix:{self.dirs['run']}/db.sock"
        self.ctl = f"{self.dirs['run']}/ovs-vswitchd.ctl"
        tb.quiet_router_stack()
        conf = os.path.join(self.dirs["etc"], "conf.db")
        run(["ovsdb-tool", "create", conf, "/usr/share/openvswitch/vswitch.ovsschema"])
        self.logs = [open(os.path.join(self.dirs["log"], n), "w") for n in ("ovsdb-server.out", "ovs-vswitchd.out")]
        r = self.dirs["run"]
        self.ovsdb = tb.spawn(
            tb.r,
            [
                "ovsdb-server",
                conf,
                f"--remote=punix:{r}/db.sock",
                f"--unixctl={r}/ovsdb-server.ctl",
                f"--pidfile={r}/ovsdb-server.pid",
                f"--log-file={self.dirs['log']}/ovsdb-server.log",
            ],
            stdout=self.logs[0],
            stderr=self.logs[0],
            env=self.env,
        )
        wait_for(lambda: os.path.exists(f"{r}/db.sock"), 20, "ovsdb-server's socket")
        self.vsctl(["--no-wait", "init"])
        self.vswitchd = tb.spawn(
            tb.r,
            [
                "ovs-vswitchd",
                self.db,
                f"--unixctl={self.ctl}",
                f"--pidfile={r}/ovs-vswitchd.pid",
                f"--log-file={self.dirs['log']}/ovs-vswitchd.log",
            ],
            stdout=self.logs[1],
            stderr=self.logs[1],
            env=self.env,
        )
        wait_for(lambda: os.path.exists(self.ctl), 20, "ovs-vswitchd's control socket")
        self.vsctl(
            [
                "--timeout=30",
                "add-br", "br0",
                "--", "set", "bridge", "br0", "datapath_type=netdev", "fail-mode=secure",
                "--", "add-port", "br0", "r-cli", "--", "set", "interface", "r-cli", "ofport_request=1",
                "--", "add-port", "br0", "r-srv", "--", "set", "interface", "r-srv", "ofport_request=2",
            ]
        )
        # A Datapath record for "netdev", where zone timeout policies are kept (the churn sets one).
        self.vsctl(["--", "--id=@dp", "create", "Datapath", "datapath_version=0",
                    "--", "set", "Open_vSwitch", ".", "datapaths:netdev=@dp"])
        m = tb.macs
        to_srv = f"mod_dl_src:{m['r-srv']},mod_dl_dst:{m['s0']},dec_ttl,output:2"
        to_cli = f"mod_dl_src:{m['r-cli']},mod_dl_dst:{m['c0']},dec_ttl,output:1"
        flows = [
            "table=0,priority=0,actions=drop",
            "table=0,priority=10,ip,in_port=1,nw_dst=198.19.1.0/24,actions=ct(table=1)",
            "table=0,priority=10,ip,in_port=2,nw_dst=198.18.1.0/24,actions=ct(table=1)",
            "table=0,priority=10,ipv6,in_port=1,ipv6_dst=2001:2:0:2::/64,actions=ct(table=1)",
            "table=0,priority=10,ipv6,in_port=2,ipv6_dst=2001:2:0:1::/64,actions=ct(table=1)",
            "table=1,priority=0,actions=drop",
            # The churn's flows (their own source address) in zone 2, whose timeout policy the
            # churn sets: OVS keeps one expiry list per state, in insertion order, so flows with a
            # shorter timeout behind older ones with the default would wait for those.
            f"table=0,priority=20,ip,in_port=1,nw_src={CHURN_SRC},nw_dst=198.19.1.0/24,actions=ct(zone=2,table=2)",
            "table=2,priority=0,actions=drop",
            f"table=2,priority=10,ip,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=2),{to_srv}",
            f"table=2,priority=10,ip,ct_state=+trk+est,in_port=1,actions={to_srv}",
        ]
        # dec_ttl needs the flow to say its family.
        for fam in ("ip", "ipv6"):
            for port, out in ((1, to_srv), (2, to_cli)):
                flows += [
                    f"table=1,priority=10,{fam},ct_state=+trk+new,in_port={port},actions=ct(commit),{out}",
                    f"table=1,priority=10,{fam},ct_state=+trk+est,in_port={port},actions={out}",
                    f"table=1,priority=10,{fam},ct_state=+trk+rel,in_port={port},actions={out}",
                ]
        run(["ovs-ofctl", "del-flows", "br0"], ns=tb.r, env=self.env)
        run(["ovs-ofctl", "add-flows", "br0", "-"], ns=tb.r, env=self.env, input="\n".join(flows) + "\n")
        # The flows answer no ARP or NDP: the client and the server know their gateway.
        for ns, dev, gw4, gw6, port in (
            (tb.c, "c0", "198.18.1.1", "2001:2:0:1::1", "r-cli"),
            (tb.s, "s0", "198.19.1.1", "2001:2:0:2::1", "r-srv"),
        ):
            for gw in (gw4, gw6):
                run(["ip", "-n", ns, "neigh", "replace", gw, "lladdr", m[port], "dev", dev, "nud", "permanent"])

    def vsctl(self, args):
        return run(["ovs-vsctl", f"--db={self.db}"] + args, ns=self.tb.r, env=self.env)

    def appctl(self, args, check=True):
        return run(["ovs-appctl", "-t", self.ctl] + args, ns=self.tb.r, env=self.env, check=check)

    def dut_pids(self):
        return [self.vswitchd.pid]

    def table_count(self):
        p = self.appctl(["dpctl/ct-get-nconns"], check=False)
        return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip().isdigit() else None

    def set_udp_timeout(self, secs):
        # Only the churn's zone (2): its flows are the only ones there.
        if secs is None:
            self.vsctl(["--if-exists", "del-zone-tp", "netdev", "zone=2"])
        else:
            self.vsctl(["add-zone-tp", "netdev", "zone=2", f"udp_first={secs}", f"udp_single={secs}"])

    def stats(self):
        # The packet sockets' drop counts (skmem d…): what OVS's receive queues lost.
        return (
            run(["ss", "-f", "link", "-m", "-a", "-p"], ns=self.tb.r, check=False).stdout
            + self.appctl(["dpctl/show", "-s"], check=False).stdout
            + self.appctl(["dpif-netdev/pmd-stats-show"], check=False).stdout
        )

    def teardown(self):
        for p in (getattr(self, "vswitchd", None), getattr(self, "ovsdb", None)):
            if p is not None:
                self.tb.reaper.stop(p, grace=5.0)
        for f in getattr(self, "logs", []):
            f.close()


class Ferrowall(System):
    kind = "ferrowall"

    def __init__(self, mode, workers):
        self.mode = mode
        self.workers = workers
        self.name = f"fw-{mode}-{workers}w"
        what = {"router": "router (AF_PACKET)", "tun": "TUN", "bridge": "bridge"}[mode]
        self.label = f"ferrowall {what}, {workers} worker{'s' if workers > 1 else ''}"
        self.layout = "bridge" if mode == "bridge" else "router"

    def setup(self, tb, work, bins):
        self.tb = tb
        self.bins = bins
        d = os.path.join(work, "ferrowall")
        os.makedirs(d, exist_ok=True)
        self.socket = os.path.join(d, "ctl.sock")
        lines = [
            f"ctl_socket = {self.socket}",
            f"state_dir = {os.path.join(d, 'state')}",
            "rules = fw.rules",
            f"workers = {self.workers}",
            "max_connections = 262144",
            f"mode = {self.mode}",
        ]
        # `FWCMP_BUSY_POLL=US` sets the workers' busy polling, to compare settings.
        if os.environ.get("FWCMP_BUSY_POLL"):
            lines.append(f"busy_poll = {int(os.environ['FWCMP_BUSY_POLL'])}")
        if self.mode == "router":
            tb.quiet_router_stack()
            lines += [
                "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64",
                "interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64",
            ]
        elif self.mode == "bridge":
            tb.quiet_router_stack()
            lines += ["interface = r-cli", "interface = r-srv"]
        else:
            # The kernel routes; policy routing sends what enters from either veth into fw0
            # (engine/src/io/tunnel.rs), a prohibit route behind it.
            tb.router_addresses()
            tb.kernel_forwarding()
            run(["ip", "-n", tb.r, "tuntap", "add", "dev", "fw0", "mode", "tun", "multi_queue"])
            run(["ip", "-n", tb.r, "link", "set", "fw0", "up"])
            run(["sysctl", "-qw", "net.ipv4.conf.fw0.rp_filter=0"], ns=tb.r)
            for v in ("-4", "-6"):
                for iif in ("r-cli", "r-srv"):
                    run(["ip", "-n", tb.r, v, "rule", "add", "iif", iif, "lookup", "100"])
                run(["ip", "-n", tb.r, v, "route", "add", "default", "dev", "fw0", "table", "100"])
                run(["ip", "-n", tb.r, v, "route", "add", "prohibit", "default", "table", "100", "metric", "4294967295"])
            lines += ["interface = fw0"]
        with open(os.path.join(d, "fw.rules"), "w") as f:
            f.write(FW_RULES)
        conf = os.path.join(d, "ferrowall.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.logpath = os.path.join(d, "ferrowall.log")
        self.log = open(self.logpath, "w")
        self.proc = tb.spawn(tb.r, [bins["ferrowall"], "run", "--config", conf], stdout=self.log, stderr=self.log)

        def up():
            if self.proc.poll() is not None:
                raise Failed(f"ferrowall exited at start-up: {self.read_log()}")
            return "control socket listening on" in self.read_log() or os.path.exists(self.socket)

        wait_for(up, 20, "ferrowall's control socket")
        # `FWCMP_PIN=CPU[,CPU…]` pins worker i to the i-th CPU (taskset on its thread), to measure
        # pinning; trafgen pins itself to CPU 0.
        if os.environ.get("FWCMP_PIN"):
            wait_for(lambda: len(self.worker_tids()) >= self.workers, 10, "ferrowall's worker threads")
            for cpu, tid in zip(os.environ["FWCMP_PIN"].split(","), self.worker_tids()):
                run(["taskset", "-p", "-c", cpu, str(tid)])

    def worker_tids(self):
        """The worker threads (`ferrowall-w<i>` routing, `-b<i>` bridging, `-t<i>` over TUN), in
        worker order."""
        found = []
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{tid}/comm") as f:
                    m = re.fullmatch(r"ferrowall-[wbt](\d+)", f.read().strip())
                if m:
                    found.append((int(m.group(1)), int(tid)))
        except OSError:
            pass
        return [tid for _, tid in sorted(found)]

    def read_log(self):
        try:
            with open(self.logpath) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def ctl(self, args, check=True):
        return run([self.bins["ferroctl"]] + args, check=check, timeout=30)

    def dut_pids(self):
        return [self.proc.pid]

    def stats(self):
        return self.ctl(["stats", "--socket", self.socket], check=False).stdout

    def table_count(self):
        text = self.stats() or ""
        for pat in (r"connections[=:]\s*(\d+)", r"count[=:]\s*(\d+)", r"entries[=:]\s*(\d+)"):
            m = re.search(pat, text)
            if m:
                return int(m.group(1))
        return None

    def set_udp_timeout(self, secs):
        v = UDP_UNREPLIED_DEFAULT if secs is None else secs
        self.ctl(["timeout", "--socket", self.socket, "default-set", "inet", "udp", "unreplied", str(v)])

    def teardown(self):
        p = getattr(self, "proc", None)
        if p is not None:
            self.tb.reaper.stop(p, grace=10.0)
        if getattr(self, "log", None):
            self.log.close()


def wait_for(cond, secs, what):
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            raise Failed(f"no {what} after {secs} s")
        time.sleep(0.05)


def all_systems():
    out = [KernelFwd(), KernelNft(), Ovs()]
    for mode in ("router", "tun", "bridge"):
        for w in (1, 2):
            out.append(Ferrowall(mode, w))
    return out
