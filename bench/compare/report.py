"""From the records of a run (compare.json) to the markdown table and the SVG chart."""

import html
import statistics

from workloads import ORDER, WORKLOADS, value

KINDS_COLOUR = {
    "kernel-fwd": "#b0b0b0",
    "kernel-nft": "#6e6e6e",
    "ovs": "#e08a2c",
    "fw-router-1w": "#1f5fa8",
    "fw-router-2w": "#4f8fd8",
    "fw-tun-1w": "#2e8b57",
    "fw-tun-2w": "#6cc08b",
    "fw-bridge-1w": "#7b4fa8",
    "fw-bridge-2w": "#ad8ad6",
}

UDP = ("udp1", "udp64k", "churn")


def title(w, data):
    """A workload's name, the churn's with its size and rate."""
    name = WORKLOADS[w][0]
    ch = data["meta"].get("churn")
    if w == "churn" and ch:
        n = ch["flows"]
        size = f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k"
        name = f"UDP churn, {size} new flows at {ch['rate'] / 1e3:g}k/s, {ch['timeout']} s timeout"
    return name


def group(data):
    """{(system, workload): [result, ...]} in round order."""
    out = {}
    for rec in data["records"]:
        out.setdefault((rec["system"], rec["workload"]), []).append(rec["result"])
    return out


def stats(results, workload, key=None):
    vals = [r.get(key) if key else value(workload, r) for r in results if r and "error" not in r]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return (statistics.median(vals), min(vals), max(vals), len(vals))


def fmt(v, workload=None):
    if v is None:
        return "–"
    if workload in ("tcp", "tcp_gso"):
        return f"{v:.2f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def pct(v):
    return "–" if v is None else (f"{v * 100:.1f}%" if v >= 0.001 or v == 0 else f"{v * 100:.2f}%")


def cell(results, workload):
    s = stats(results, workload)
    errors = [r["error"] for r in results if r and "error" in r]
    if s is None:
        why = errors[0] if errors else "not run"
        return f"**fails**: {html.escape(why[:120])}"
    med, lo, hi, n = s
    text = f"{fmt(med, workload)} [{fmt(lo, workload)}–{fmt(hi, workload)}]"
    if workload in UDP:
        loss = stats(results, workload, "loss")
        if loss:
            text += f"<br>loss {pct(loss[0])} [{pct(loss[1])}–{pct(loss[2])}]"
    if workload in UDP:
        late = stats(results, workload, "late")
        settle = stats(results, workload, "settle_s")
        if late and late[0] > 0:
            text += f"<br>{late[0]:,.0f} more arrived in the {settle[0]:.0f} s after"
    if workload == "churn":
        peak = stats(results, workload, "table_peak")
        drain = stats(results, workload, "drain_s")
        if peak:
            text += f"<br>table peak {peak[0] / 1000:.0f}k"
        if drain:
            text += f", drained {drain[0]:.1f} s after"
    if workload in ("cps1", "cps8"):
        fails = stats(results, workload, "failures")
        if fails and fails[0]:
            text += f"<br>{fails[0]:.0f} failed"
    if errors:
        text += f"<br>({len(errors)} of {len(results)} rounds failed: {html.escape(errors[0][:80])})"
    return text


def median_of(g, system, workload):
    s = stats(g.get((system, workload), []), workload)
    return s[0] if s else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def cpu_cell(results):
    ok = [r["cpu"] for r in results if r and "cpu" in r]
    if not ok:
        return "–"
    parts = []
    for key, name in (("dut", "proc"), ("softirq", "si"), ("busy", "all"), ("gen", "gen")):
        vals = [c[key] for c in ok if c.get(key) is not None]
        if vals:
            parts.append(f"{name} {statistics.median(vals):.0f}")
    return " / ".join(parts)


def targets(g):
    """The issue's targets for ferrowall as an AF_PACKET router: (what, measured, target, met)."""
    rows = []
    for sysname in ("fw-router-1w", "fw-router-2w"):
        fw = lambda w: median_of(g, sysname, w)  # noqa: E731
        for w in ("udp1", "udp64k"):
            r_ovs = ratio(fw(w), median_of(g, "ovs", w))
            r_nft = ratio(fw(w), median_of(g, "kernel-nft", w))
            loss = stats(g.get((sysname, w), []), w, "loss")
            name = WORKLOADS[w][0]
            rows.append((f"{sysname}: {name}, vs OVS", fmt_ratio(r_ovs), "≥ 2×", r_ovs is not None and r_ovs >= 2))
            rows.append((f"{sysname}: {name}, vs kernel nft", fmt_ratio(r_nft), "≥ 1.0×", r_nft is not None and r_nft >= 1))
            rows.append((f"{sysname}: {name}, loss", pct(loss[0]) if loss else "–", "< 1%", bool(loss) and loss[0] < 0.01))
        for w in ("cps1", "cps8", "tcp"):
            r = ratio(fw(w), median_of(g, "kernel-nft", w))
            rows.append((f"{sysname}: {WORKLOADS[w][0]}, vs kernel nft", fmt_ratio(r), "≥ 1.0×", r is not None and r >= 1))
        r = ratio(fw("tcp_gso"), median_of(g, "kernel-nft", "tcp_gso"))
        rows.append((f"{sysname}: {WORKLOADS['tcp_gso'][0]}, vs kernel nft", fmt_ratio(r), "≥ 0.5×", r is not None and r >= 0.5))
    r = ratio(median_of(g, "fw-router-2w", "udp64k"), median_of(g, "fw-router-1w", "udp64k"))
    rows.append(("2 workers / 1 worker, 64k flows", fmt_ratio(r), "≥ 1.6×", r is not None and r >= 1.6))
    return rows


def markdown(data):
    g = group(data)
    systems = [s for s in data["systems"] if any((s["name"], w) in g for w in ORDER)]
    workloads = [w for w in ORDER if any((s["name"], w) in g for s in systems)]
    m = data["meta"]
    out = [
        "# ferrowall, the kernel and Open vSwitch on one testbed",
        "",
        f"Generated by `{m.get('command', 'bench/compare/run')}` on {m.get('date', '?')}: "
        f"{m.get('rounds', '?')} interleaved rounds of every configuration (A B C … A B C …), "
        f"{m.get('seconds', '?')} s per workload. Machine: {m.get('machine', '?')}. Kernel {m.get('kernel', '?')}. "
        "What else ran: see *Load* below. Method and caveats: `bench/README.md`.",
        "",
        "Each cell: median [min–max] over the rounds. UDP: what the server received per second, "
        "between 20% and 95% of the run, and the loss over the whole run (sent = what the client's "
        "veth took).",
        "",
    ]
    head = "| configuration | " + " | ".join(f"{title(w, data)} ({WORKLOADS[w][1]})" for w in workloads) + " |"
    out += [head, "|" + "---|" * (len(workloads) + 1)]
    for s in systems:
        out.append(f"| {s['label']} | " + " | ".join(cell(g.get((s['name'], w), []), w) for w in workloads) + " |")
    out += ["", "## Ratios (medians)", ""]
    fws = [s for s in systems if s["name"].startswith("fw-")]
    out += ["| ferrowall | against | " + " | ".join(title(w, data) for w in workloads) + " |",
            "|" + "---|" * (len(workloads) + 2)]
    for s in fws:
        for other, oname in (("kernel-nft", "kernel nft"), ("ovs", "OVS")):
            rs = [fmt_ratio(ratio(median_of(g, s["name"], w), median_of(g, other, w))) for w in workloads]
            out.append(f"| {s['label']} | {oname} | " + " | ".join(rs) + " |")
    out += ["", "## Targets of issue 5 (ferrowall as an AF_PACKET router)", "",
            "| target | measured | wanted | met |", "|---|---|---|---|"]
    for what, got, want, met in targets(g):
        out.append(f"| {what} | {got} | {want} | {'yes' if met else '**no**'} |")
    out += [
        "",
        "## CPU (medians, % of one core)",
        "",
        "`proc`: the forwarding process (ferrowall, ovs-vswitchd; utime + stime, all threads); `si`: "
        "softirq time of the whole machine; `all`: the whole machine's busy time (of 200%, other "
        "jobs included); `gen`: the UDP generator (trafgen). The kernel forwards in "
        "softirq (`si`), mostly on the sender's CPU.",
        "",
        "| configuration | " + " | ".join(title(w, data) for w in workloads) + " |",
        "|" + "---|" * (len(workloads) + 1),
    ]
    for s in systems:
        out.append(f"| {s['label']} | " + " | ".join(cpu_cell(g.get((s['name'], w), [])) for w in workloads) + " |")
    rtts = {s["name"]: [r["ping"]["rtt_ms"] for r in g.get((s["name"], workloads[0]), [])
                        if r and r.get("ping", {}).get("rtt_ms") is not None] for s in systems} if workloads else {}
    if any(rtts.values()):
        out += ["", "## Round trip", "", "`ping -c 50 -i 0.02` client → server before the workloads, average, median of the rounds:", "",
                "| configuration | ms |", "|---|---|"]
        for s in systems:
            v = rtts.get(s["name"])
            out.append(f"| {s['label']} | {statistics.median(v):.3f} |" if v else f"| {s['label']} | – |")
    if data.get("load"):
        out += ["", "## Load", "", "Load average and the busiest other processes when each round started and ended:", ""]
        for line in data["load"]:
            out.append(f"* {line}")
    if data.get("notes"):
        out += ["", "## Notes", ""] + [f"* {n}" for n in data["notes"]]
    return "\n".join(out) + "\n"


def svg(data):
    """Small multiples: one panel per workload, a bar per configuration (median), a whisker for
    min–max, the value written at the end of the bar."""
    g = group(data)
    systems = [s for s in data["systems"] if any((s["name"], w) in g for w in ORDER)]
    workloads = [w for w in ORDER if any((s["name"], w) in g for s in systems)]
    cols, pw, label_w, bar_h, gap = 2, 620, 250, 16, 4
    ph = 40 + len(systems) * (bar_h + gap) + 10
    rows = (len(workloads) + cols - 1) // cols
    width, height = cols * pw + 20, rows * ph + 70
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">ferrowall, kernel nftables and Open vSwitch: '
        f'medians of {data["meta"].get("rounds", "?")} interleaved rounds (whiskers: min–max)</text>',
        f'<text x="10" y="40" fill="#555">{e(data["meta"].get("date", ""))}, {e(data["meta"].get("machine", ""))}; '
        'bench/results/compare.md has the numbers, losses and CPU</text>',
    ]
    for i, w in enumerate(workloads):
        x0, y0 = 10 + (i % cols) * pw, 55 + (i // cols) * ph
        name, unit = title(w, data), WORKLOADS[w][1]
        vals = {s["name"]: stats(g.get((s["name"], w), []), w) for s in systems}
        top = max((v[2] for v in vals.values() if v), default=1) or 1
        scale = (pw - label_w - 150) / top
        parts.append(f'<text x="{x0}" y="{y0 + 14}" font-size="13" font-weight="bold">{e(name)} ({e(unit)})</text>')
        for k, s in enumerate(systems):
            y = y0 + 26 + k * (bar_h + gap)
            parts.append(f'<text x="{x0 + label_w - 6}" y="{y + 12}" text-anchor="end">{e(s["label"])}</text>')
            v = vals[s["name"]]
            bx = x0 + label_w
            if not v:
                parts.append(f'<text x="{bx + 4}" y="{y + 12}" fill="#b00">fails / not run</text>')
                continue
            med, lo, hi, _n = v
            colour = KINDS_COLOUR.get(s["name"], "#888")
            parts.append(f'<rect x="{bx}" y="{y}" width="{max(med * scale, 1):.1f}" height="{bar_h}" fill="{colour}"/>')
            parts.append(
                f'<line x1="{bx + lo * scale:.1f}" x2="{bx + hi * scale:.1f}" y1="{y + bar_h / 2}" y2="{y + bar_h / 2}" '
                'stroke="black" stroke-width="1"/>'
            )
            for xv in (lo, hi):
                parts.append(
                    f'<line x1="{bx + xv * scale:.1f}" x2="{bx + xv * scale:.1f}" y1="{y + 3}" y2="{y + bar_h - 3}" '
                    'stroke="black" stroke-width="1"/>'
                )
            label = fmt(med, w)
            if w in UDP:
                loss = stats(g.get((s["name"], w), []), w, "loss")
                if loss and loss[0] >= 0.001:
                    label += f" ({pct(loss[0])} loss)"
            parts.append(f'<text x="{bx + hi * scale + 5:.1f}" y="{y + 12}">{e(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
