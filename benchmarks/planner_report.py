"""The "planner on a home network" section of RESULTS.md, from benchmarks/out/planner.json."""

from __future__ import annotations

from cells import code_of, fmt

LABELS = ("alone", "b forced", "c forced", "b+c forced", "b offered", "alone again",
          "b offered again", "b+c offered")


def planner_section(d: dict) -> list[str]:
    m = d["machine"]
    head = ["## Planner on an emulated home network (benchmarks/bench_planner.py)", ""]
    if d.get("skipped"):
        return head + [f"Not run: {d['skipped']}.", ""]
    s = d.get("summary") or {}
    lines = head + [
        f"Started {m['date']}{code_of(m)}, load average then {m['load_avg_at_start']}, at end "
        f"{d.get('load_avg_at_end')} ({d['cores']} cores). Default model (GGUF, q4_1 layers, "
        f"q8_0 head), greedy, {_tokens(d)}, {d['reps']} repetitions, medians. "
        "This computer (pinned to core 0) and two `tpi-chat worker` devices in network "
        f"namespaces on a bridge, {fmt(d['mbit'], 0)} Mbit/s each (`tc tbf`, "
        "scripts/home_lan.py); the link latency is the comm layer's emulation, per send. "
        "With 2 cores, dev-b and dev-c share core 1: the runs come in three phases (b; c; "
        "b and c), each after `tpi-chat plan --fresh` over its devices, so two devices on "
        "one core measure half of it at once, as they will compute; a device alone has the "
        "core to itself and is measured alone. 'forced': `--force all`; 'offered': the "
        "devices are offered and the planner decides. 'alone' has no link: one run stands "
        "for every delay. The choice and adding-a-device checks are paired: the median over "
        f"back-to-back sets ({_sets(d)} at each delay: 'alone again', 'b offered again', "
        "'b+c offered') of each set's ratio, since runs of one plan minutes apart drift by "
        "20-40% here; the ratio of medians is beside it.", "",
        *_load_note(d), "| check | value | ratio of medians | limit | result |",
        "|---|---|---|---|---|"]
    for name, c in (s.get("checks") or {}).items():
        limit = "+-25%" if name.startswith("prediction") else "<= 1.1"
        value = (f"{c['value'] * 100:+.0f}%" if name.startswith("prediction")
                 else fmt(c["value"], 2))
        of_medians = fmt(c["of_medians"], 2) if "of_medians" in c else "-"
        lines.append(f"| {name} | {value} | {of_medians} | {limit} | "
                     f"{'PASS' if c['pass'] else 'MISS'}{_same_note(c)} |")
    lines += ["", "| configuration | delay ms | devices used | measured ms/token | predicted "
              "| error | runs |", "|---|---|---|---|---|---|---|"]
    rows = s.get("by_config") or {}
    for label in LABELS:
        for delay in d["delays"]:
            r = rows.get(f"{label} @{delay:g}")
            if r:
                lines.append(f"| {label} | {delay:g} | {', '.join(r.get('devices') or [])} | "
                             f"{fmt(r['measured'])} | {fmt(r['predicted'])} | "
                             f"{r['error'] * 100:+.0f}% | {', '.join(map(str, r['runs']))} |")
    return lines + [""]


def _sets(d: dict) -> str:
    pairs = d.get("pairs", 1)
    return f"{pairs} a repetition" if pairs > 1 else "one a repetition"


def _same_note(c: dict) -> str:
    same, total = c.get("same_plan") or (0, 0)
    if not total or same != total:
        return ""
    return (f" (the same plan as the run it is compared with in {same}/{total} repetitions: "
            "the ratio is run-to-run noise)")


def _tokens(d: dict) -> str:
    if "fast_tokens" not in d:
        return f"{d['tokens']} new tokens"
    return (f"{d['tokens']} new tokens over a delayed link, {d['fast_tokens']} in every "
            "other run")


def _load_note(d: dict) -> list[str]:
    """A warning when the machine was busy with other work: say how far apart runs of
    one configuration landed, so the checks are read for what they are."""
    loads = [*(d["machine"].get("load_avg_at_start") or [0]), *(d.get("load_avg_at_end") or [0])]
    if max(loads) <= 2 * (d.get("cores") or 1):
        return []
    spreads = []
    for label in ("alone", "b offered", "b+c offered"):
        xs = [r["decode_ms_per_token"] for r in d.get("runs", []) if r["label"] == label]
        if len(xs) > 1:
            spreads.append(f"{label} {min(xs):.0f}-{max(xs):.0f}")
    return [f"**The machine was loaded** (load average up to {max(loads):.1f} on "
            f"{d.get('cores')} cores, from other work): one configuration's runs landed "
            f"far apart ({'; '.join(spreads) or 'one run each'} ms/token; every run that "
            "chose 'This device' alone is the same computation), and the speeds measured "
            "before each phase moved as much. Read the checks as a measure of that noise "
            "as much as of the planner.", ""]
