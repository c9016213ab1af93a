"""Re-predict benchmarks/out/planner.json's runs with this checkout's cost model, from the
measurements the benchmark recorded, and print predicted vs measured per configuration.

    .venv/bin/python benchmarks/repredict_planner.py [planner.json] [--msg-ms X --frame-ms Y]

A run that recorded the numbers its own plan used ("measured", since generate --json
reports them) is re-predicted from those; an older run from the `plan --fresh` of its
phase (so the link round trips are the phase's, not those its own start-up measured).
Measurements made before devices reported `msg_ms`/`frame_ms` lack them; --msg-ms and
--frame-ms put a value in for every device that lacks one (say where it came from).
No benchmark is run: this only re-prices what was measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_planner import CONFIGS, PAIRED  # noqa: E402
from common import OUT, bench_env  # noqa: E402

PHASE_OF = {label: phase for label, _, _, phase in (*CONFIGS, *PAIRED)}
FORCED = {label: force == "all" for label, _, force, _ in (*CONFIGS, *PAIRED)}


def members(measured: dict, msg_ms: float | None, frame_ms: float | None):
    from core.cluster.cost_model import Member
    from core.cluster.measures import DeviceSpeed, LinkSpeed, rtt_samples

    out = []
    for name, m in measured.items():
        if name in ("rep", "phase"):
            continue
        dev = dict(m["device"])
        if msg_ms is not None and "msg_ms" not in dev:
            dev["msg_ms"] = msg_ms
        if frame_ms is not None and "frame_ms" not in dev:
            dev["frame_ms"] = frame_ms
        link = m.get("link")
        ls = None if link is None else LinkSpeed(rtt_samples(link["rtt_ms"]), link.get("mbps"))
        out.append(Member(name, DeviceSpeed.from_dict(dev), ls, int(m["budget"])))
    return out


def repredict(data: dict, mb, msg_ms: float | None = None, frame_ms: float | None = None
              ) -> list[dict]:
    """One row per run: label, delay, measured, recorded prediction, re-prediction."""
    from core.cluster.planner import choose
    from core.comm.linkemu import LinkEmulation

    phases = {(m["rep"], m["phase"]): m for m in data.get("measured", [])}
    rows = []
    for r in data.get("runs", []):
        got = r.get("measured") or phases.get((r["rep"], PHASE_OF[r["label"]]))
        if got is None:
            continue
        ms = members(got, msg_ms, frame_ms)  # a run's own: exactly its plan's members
        me = next(m for m in ms if m.link is None)
        others = [m for m in ms if m.link is not None]
        forced = {m.name for m in others} if FORCED[r["label"]] else set()
        emu = LinkEmulation(r["delay_ms"]) if r["delay_ms"] else None
        # what its workers added answering together, as its own plan probed it (0 before
        # the planner probed groups)
        together = (r.get("prediction") or {}).get("group_ms", 0.0)
        groups = {frozenset(m.name for m in others): together} if len(others) > 1 else {}
        c = choose(mb, me, others, forced, emu, groups=groups)
        p = c.prediction
        rows.append({"label": r["label"], "delay": r["delay_ms"], "rep": r["rep"],
                     "measured": r["decode_ms_per_token"],
                     "recorded": r["predicted_ms_per_token"], "again": p.ms_per_token,
                     "compute": p.compute_ms, "link": p.link_ms, "devices": c.names})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = [f"{'configuration':<14}{'delay':>6}{'measured':>10}{'recorded':>10}{'err':>7}"
             f"{'again':>9}{'err':>7}{'compute':>9}{'link':>8}  devices"]
    seen = []
    for r in rows:
        key = (r["label"], r["delay"])
        if key in seen:
            continue
        seen.append(key)
        rs = [x for x in rows if (x["label"], x["delay"]) == key]

        def med(k: str, rs: list[dict] = rs) -> float:
            return statistics.median(x[k] for x in rs)

        m, rec, again = med("measured"), med("recorded"), med("again")
        lines.append(f"{key[0]:<14}{key[1]:>6g}{m:>10.1f}{rec:>10.1f}{rec / m - 1:>+7.0%}"
                     f"{again:>9.1f}{again / m - 1:>+7.0%}{med('compute'):>9.1f}"
                     f"{med('link'):>8.1f}  {','.join(rs[-1]['devices'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(OUT / "planner.json"))
    ap.add_argument("--msg-ms", type=float, default=None)
    ap.add_argument("--frame-ms", type=float, default=None)
    args = ap.parse_args(argv)
    import os

    os.environ.update({k: v for k, v in bench_env().items() if k == "TPI_CHAT_CACHE"})
    from core.cluster.plan_devices import model_bytes
    from core.engine.options import RunOptions
    from core.model.model_dir import resolve_model

    data = json.loads(Path(args.path).read_text())
    mb = model_bytes(resolve_model(None), RunOptions())
    print("\n".join(table(repredict(data, mb, args.msg_ms, args.frame_ms))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
