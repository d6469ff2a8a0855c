"""The workloads, each bounded in count and in time, each returning a dict of figures.

CPU is counted per workload, over its measured window:

* ``dut``: utime + stime of the process that forwards (ferrowall, all its threads; ovs-vswitchd),
  from /proc/PID/stat, in % of one core. The kernel has no such process: its forwarding runs in
  softirq context on whichever CPU the packet arrived (here mostly the sender's).
* ``softirq``: the machine's softirq time (/proc/stat, both CPUs), in % of one core: the veth
  delivery of every configuration, and all the kernel's forwarding. This kernel has no
  IRQ_TIME_ACCOUNTING, so softirq time that a tick lands on is *also* charged to the task it
  interrupted (e.g. ferrowall's transmit, which delivers into the server's namespace in its own
  context): ``dut`` and ``softirq`` overlap.
* ``busy``: the whole machine's non-idle time (both CPUs, so at most 200%), including whatever
  else runs on the machine.
* ``gen``: the UDP generator's own CPU (wait4).
"""

import json
import os
import signal
import threading
import time

from testbed import CONN_PORT, IPERF_PORT, UDP_PORTS, Failed, dev_stat, run, signal_group

HZ = os.sysconf("SC_CLK_TCK")


def system_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    # Busy from the tick-sampled fields (as the per-process times are), not as total − idle: on
    # this tickless kernel the idle field lags over short windows.
    return {"busy": user + nice + system + irq + softirq, "softirq": softirq}


class CpuMeter:
    def __init__(self, pids):
        from systems import proc_cpu_ticks

        self.ticks = proc_cpu_ticks
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.s0 = system_cpu()
        self.p0 = {p: proc_cpu_ticks(p) for p in self.pids}

    def stop(self):
        dt = max(time.monotonic() - self.t0, 1e-6)
        s1 = system_cpu()
        out = {
            "softirq": round((s1["softirq"] - self.s0["softirq"]) / HZ / dt * 100, 1),
            "busy": round((s1["busy"] - self.s0["busy"]) / HZ / dt * 100, 1),
        }
        if self.pids:
            used = 0
            for p in self.pids:
                a, b = self.p0.get(p), self.ticks(p)
                if a is not None and b is not None:
                    used += b - a
            out["dut"] = round(used / HZ / dt * 100, 1)
        return out


class Ctx:
    """What a workload needs: the testbed, the system under test, the binaries, a work
    directory, and the options (seconds, churn size and rate)."""

    def __init__(self, tb, system, bins, work, opts):
        self.tb, self.system, self.bins, self.work, self.opts = tb, system, bins, work, opts


# --- TCP throughput --------------------------------------------------------------------------


def tcp(ctx, offload):
    tb, secs = ctx.tb, ctx.opts.seconds
    if offload:
        tb.set_offloads(True)
    srv = tb.spawn(tb.s, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)])
    try:
        wait_listening(tb.s, IPERF_PORT)
        meter = CpuMeter(ctx.system.dut_pids())
        try:
            p = run(
                ["iperf3", "-c", tb.server_v4, "-p", str(IPERF_PORT), "-t", str(secs), "-J", "--connect-timeout", "3000"],
                ns=tb.c,
                check=False,
                timeout=secs + 25,
            )
            out = p.stdout
        except Failed as e:
            return {"error": f"iperf3 did not finish: {e}"}
        cpu = meter.stop()
        try:
            j = json.loads(out)
        except ValueError:
            return {"error": f"iperf3: {(p.stderr or out).strip()[:300]}", "cpu": cpu}
        if j.get("error"):
            return {"error": f"iperf3: {j['error']}", "cpu": cpu}
        end = j.get("end", {})
        bps = end.get("sum_received", {}).get("bits_per_second", 0.0)
        return {
            "gbps": round(bps / 1e9, 3),
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
            "cpu": cpu,
        }
    finally:
        tb.reaper.stop(srv, grace=2.0)
        if srv in tb.procs:
            tb.procs.remove(srv)
        if offload:
            tb.set_offloads(False)


def wait_listening(ns, port, secs=10):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        out = run(["ss", "-Hltn", f"sport = :{port}"], ns=ns, check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise Failed(f"nothing listens on port {port} after {secs} s")


# --- UDP packet rate ---------------------------------------------------------------------------


def trafgen_config(ctx, flows):
    """A 60-byte frame (64 on the wire with the FCS): Ethernet, IPv4, UDP, 18 bytes of payload.
    ``flows`` 1: one flow. ``64k``: source ports 1024..65535 (64,512 flows), one packet each in
    turn. ``churn``: source ports 1024..65535 and destination ports 9..25 both stepping by one
    per packet (periods 64,512 and 17, coprime): the first 1,096,704 packets are each a new flow."""
    tb = ctx.tb
    lo, hi = UDP_PORTS
    sp = "1024" if flows == "1" else "dinc(1024, 65535)"
    dp = f"dinc({lo}, {hi})" if flows == "churn" else str(lo)
    return (
        f"{{ eth(da={tb.generator_dst_mac()}, sa={tb.macs['c0']}), "
        f"ipv4(saddr={tb.churn_src if flows == 'churn' else tb.client_v4}, daddr={tb.server_v4}, ttl=64), "
        f"udp(sp={sp}, dp={dp}), fill(0, 18) }}\n"
    )


def counters(ctx):
    tb = ctx.tb
    return {
        "tx": dev_stat(tb.c, "c0", "tx_packets") + dev_stat(tb.c, "c0", "tx_dropped"),
        "rx": tb.udp_counter(),
        "t": time.monotonic(),
    }


def udp(ctx, flows, count=None, rate=None, secs=None, on_end=None):
    """The generator (netsniff-ng's trafgen: TX ring, one process pinned by itself to CPU 0,
    qdisc bypassed) sends from the client, at ``rate`` pps or as fast as it can, at most ``count``
    frames and for at most ``secs`` seconds. Sent = what c0 transmitted or dropped (``tx_packets``
    + ``tx_dropped``); received = the server's ingress counter. The rates are taken between 20%
    and 95% of the window (steady state); loss over the whole run, after 0.5 s to drain."""
    tb = ctx.tb
    secs = secs if secs is not None else ctx.opts.seconds
    count = count if count is not None else int(secs * 5_000_000)
    cfg = os.path.join(ctx.work, f"trafgen-{flows}.cfg")
    with open(cfg, "w") as f:
        f.write(trafgen_config(ctx, flows))
    log = open(os.path.join(ctx.work, f"trafgen-{flows}.log"), "w")
    argv = ["trafgen", "--no-sock-mem", "-Q", "-P1", "-o", "c0", "-i", cfg, "-n", str(count)]
    if rate:
        argv += ["-b", f"{rate}pps"]
    c0 = counters(ctx)
    meter = CpuMeter(ctx.system.dut_pids())
    gen = tb.reaper.spawn(argv, ns=tb.c, stdout=log, stderr=log)
    tb.procs.append(gen)
    start = time.monotonic()
    marks = {}
    code, gen_cpu = None, None
    try:
        while time.monotonic() - start < secs:
            el = time.monotonic() - start
            if "a" not in marks and el >= 0.2 * secs:
                marks["a"] = counters(ctx)
            if "b" not in marks and el >= 0.95 * secs:
                marks["b"] = counters(ctx)
            if gen.poll() is not None:
                break
            time.sleep(0.02)
        if gen.returncode is None and gen.poll() is None:
            # trafgen's parent waits for its sending child: interrupt both (its process group).
            signal_group(gen, signal.SIGINT)
        code, gen_cpu = tb.reaper.wait_rusage(gen, 5)
        if code is None:
            tb.reaper.stop(gen, grace=1.0)
    finally:
        if gen in tb.procs:
            tb.procs.remove(gen)
        log.close()
    gen_secs = time.monotonic() - start
    if on_end:
        on_end()
    time.sleep(0.5)
    cpu = meter.stop()
    c1 = counters(ctx)
    settle_s, late = settle(ctx, c1["rx"])
    sent, received = c1["tx"] - c0["tx"], c1["rx"] - c0["rx"]
    if sent <= 0:
        with open(os.path.join(ctx.work, f"trafgen-{flows}.log")) as f:
            raise Failed(f"the generator sent nothing: {f.read()[-500:]}")
    a, b = marks.get("a"), marks.get("b")
    if a and b and b["t"] > a["t"]:
        sent_pps = (b["tx"] - a["tx"]) / (b["t"] - a["t"])
        rx_pps = (b["rx"] - a["rx"]) / (b["t"] - a["t"])
    else:
        sent_pps, rx_pps = sent / gen_secs, received / gen_secs
    if gen_cpu is not None:
        cpu["gen"] = round(gen_cpu / gen_secs * 100, 1)
    return {
        "sent": sent,
        "received": received,
        "loss": round(max(0.0, 1 - received / sent), 4),
        "sent_kpps": round(sent_pps / 1e3, 1),
        "kpps": round(rx_pps / 1e3, 1),
        "seconds": round(gen_secs, 2),
        "cpu": cpu,
        "settle_s": settle_s,
        "late": late,
    }


def settle(ctx, rx, limit=60.0):
    """Waits until the server's counter has not moved for a second (at most ``limit`` s), so
    that what a slow forwarder still holds in its queues does not land in the next workload;
    returns (seconds it took, packets that arrived after the measurement)."""
    start = time.monotonic()
    last, still = rx, 0
    while time.monotonic() - start < limit:
        time.sleep(0.5)
        now = ctx.tb.udp_counter()
        still = still + 1 if now == last else 0
        last = now
        if still >= 2:
            break
    return round(time.monotonic() - start - 1.0, 1), last - rx


def churn(ctx):
    """A million (``--churn-flows``) new UDP flows at ``--churn-rate`` per second, unreplied
    UDP timeout set to ``--churn-timeout`` s in the tracker (back to its default afterwards); the
    table's size sampled every 0.5 s during the run and until it has drained (or 25 s past the
    timeout; OVS sweeps its table lazily)."""
    o, system = ctx.opts, ctx.system
    system.set_udp_timeout(o.churn_timeout)
    time.sleep(1.0)
    base = system.table_count()
    samples = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop.is_set():
            n = system.table_count()
            if n is not None:
                samples.append((round(time.monotonic() - t0, 2), n))
            stop.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    ended = {}
    try:
        secs = o.churn_flows / o.churn_rate + 10
        r = udp(ctx, "churn", count=o.churn_flows, rate=o.churn_rate, secs=secs,
                on_end=lambda: ended.setdefault("t", time.monotonic() - t0))
        peak = max((n for _, n in samples), default=None)
        drained = None
        if peak is not None:
            limit = time.monotonic() + o.churn_timeout + 25
            while time.monotonic() < limit:
                if samples and samples[-1][1] - (base or 0) <= max(0.01 * (peak - (base or 0)), 10):
                    drained = round(samples[-1][0] - ended["t"], 1)
                    break
                time.sleep(0.25)
    finally:
        stop.set()
        th.join(5)
        system.set_udp_timeout(None)
    r.update(
        {
            "table_before": base,
            "table_peak": max((n for _, n in samples), default=None),
            "table_end": samples[-1][1] if samples else None,
            "drain_s": drained,
            "table_samples": samples,
            "flows_per_s": round(r["sent"] / max(r["seconds"], 1e-6)),
        }
    )
    return r


# --- TCP connection rate -----------------------------------------------------------------------


def cps(ctx, inflight):
    tb, secs = ctx.tb, ctx.opts.seconds
    srv = tb.spawn(tb.s, [ctx.bins["connrate"], "serve", f"0.0.0.0:{CONN_PORT}", "4", str(secs + 60)])
    try:
        wait_listening(tb.s, CONN_PORT)
        meter = CpuMeter(ctx.system.dut_pids())
        p = run(
            [ctx.bins["connrate"], "connect", f"{tb.server_v4}:{CONN_PORT}", str(inflight), str(secs)],
            ns=tb.c,
            timeout=secs + 20,
        )
        cpu = meter.stop()
        j = json.loads(p.stdout.strip().splitlines()[-1])
        return {"cps": round(j["rate"]), "connections": j["connections"], "failures": j["failures"], "cpu": cpu}
    finally:
        tb.reaper.stop(srv, grace=2.0)
        if srv in tb.procs:
            tb.procs.remove(srv)


# In the order they run: the churn first (a table with nothing else in it), the floods after the
# connection rates (a forwarder that falls behind still holds frames afterwards: ``settle`` waits
# for them), offloads on last (it changes the ports).
WORKLOADS = {
    "tcp": ("TCP, 1 stream, offloads off", "Gbit/s", lambda c: tcp(c, False)),
    "churn": ("UDP churn, new flows", "kpps", churn),
    "cps1": ("TCP conn/s, 1 in flight", "conn/s", lambda c: cps(c, 1)),
    "cps8": ("TCP conn/s, 8 in flight", "conn/s", lambda c: cps(c, 8)),
    "udp1": ("64-byte UDP, 1 flow", "kpps", lambda c: udp(c, "1")),
    "udp64k": ("64-byte UDP, 64k flows", "kpps", lambda c: udp(c, "64k")),
    "tcp_gso": ("TCP, 1 stream, offloads on", "Gbit/s", lambda c: tcp(c, True)),
}
ORDER = list(WORKLOADS)


def main_metric(workload, r):
    if not r or "error" in r:
        return None
    return {"tcp": "gbps", "tcp_gso": "gbps", "cps1": "cps", "cps8": "cps"}.get(workload, "kpps")


def value(workload, r):
    k = main_metric(workload, r)
    return r.get(k) if k else None

