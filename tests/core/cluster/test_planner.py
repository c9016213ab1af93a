"""The cost model and the planner, on made-up measurements (pure: no process, no socket).

The model is shaped like the default SmolLM2-135M (30 layers, 3 KV heads, q4_1 layers,
a q8_0 head); devices read weights at a few GB/s and links have a given round trip."""

from __future__ import annotations

import io

import pytest

from core.cluster.cost_model import Member, allreduce_ms, predict, round_trip_ms
from core.cluster.device_status import speed_note
from core.cluster.measures import DeviceSpeed, LinkSpeed
from core.cluster.model_bytes import ModelBytes
from core.cluster.planner import choose
from core.comm.linkemu import LinkEmulation
from core.errors import TpiError
from core.model.config import ModelConfig
from core.plan_cli import print_plan
from core.shard.plan import make_plan

GB = 2**30
CFG = ModelConfig(arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                  num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5,
                  rope_theta=1e4, max_position_embeddings=8192, tie_word_embeddings=True,
                  qkv_bias=False, qk_norm=False)
MODEL = ModelBytes(CFG, attn={"q4_1": 16_000_000}, mlp={"q4_1": 50_000_000},
                   head={"q8_0": 30_000_000}, block_bytes=1_700_000)


def speed(gbps: float = 2.0, layer_ms: float = 0.1, disk: float = 1.0) -> DeviceSpeed:
    return DeviceSpeed(read_gbps={"q4_1": gbps, "q8_0": gbps * 1.2}, layer_ms=layer_ms,
                       gflops=50.0, disk_gbps=disk, free_bytes=8 * GB, cores=1)


def member(name: str, gbps: float = 2.0, rtt: float | None = 0.3, budget: int = 4 * GB,
           **kw) -> Member:
    link = None if rtt is None else LinkSpeed(rtt_ms=(rtt,) * 5, mbps=900.0)
    return Member(name, speed(gbps, **kw), link, budget)


ME = member("me", rtt=None)


def test_one_rank_of_quantized_layers_is_weight_reads_plus_head_in_one_call():
    # stack_decode.py: every layer in one compiled call, no per-layer Python to price
    p = predict(MODEL, make_plan(CFG, [1.0]), [ME])
    reads = 66_000_000 / 2e6 + 30_000_000 / 2.4e6  # ms
    assert p.ms_per_token == pytest.approx(reads)
    assert p.link_ms == 0 and p.fits and p.windows == (None,)


def test_the_per_layer_cost_is_paid_wherever_layers_run_one_by_one():
    reads = 66_000_000 / 2e6 + 30_000_000 / 2.4e6
    one = make_plan(CFG, [1.0])
    # float layers: the fused kernels do not take them, so layers.py's per-layer path
    floats = ModelBytes(CFG, attn={"float32": 16_000_000}, mlp={"float32": 50_000_000},
                        head={"q8_0": 30_000_000}, block_bytes=1_700_000)
    fme = Member("me", DeviceSpeed(read_gbps={"float32": 2.0, "q8_0": 2.4}, layer_ms=0.1,
                                   gflops=50.0, disk_gbps=1.0, free_bytes=8 * GB, cores=1),
                 None, 4 * GB)
    assert predict(floats, one, [fme]).ms_per_token == pytest.approx(reads + 30 * 0.1)
    # a window smaller than the model: the scheduler streams, the stack is not built
    tight = Member("me", speed(disk=1e3), None, budget=420 * 2**20)
    p = predict(MODEL, one, [tight], window=10)
    assert p.compute_ms == pytest.approx(reads + 30 * 0.1)
    # two ranks: an allreduce after every half-layer, so Python between them
    two = predict(MODEL, make_plan(CFG, [1.0, 1.0]), [ME, member("b", rtt=0.0)])
    assert two.compute_ms > 30 * 0.1


def test_a_link_costs_the_echo_less_the_control_software_on_both_ends():
    fast = DeviceSpeed(read_gbps={"q4_1": 2.0}, layer_ms=0.1, gflops=50.0, disk_gbps=1.0,
                       free_bytes=GB, cores=1, msg_ms=0.07, frame_ms=0.05)
    old = speed()  # a device that did not measure its messaging: msg_ms = frame_ms = 0
    link = LinkSpeed(rtt_ms=(0.4, 0.5, 0.45), mbps=900.0)
    assert round_trip_ms(link, old, old) == pytest.approx(0.45)  # priced as before
    assert round_trip_ms(link, fast, old) == pytest.approx(0.38)
    assert round_trip_ms(link, fast, fast) == pytest.approx(0.31)
    # never below what the two ends' data-plane frames cost, nor above the echo itself
    quick = LinkSpeed(rtt_ms=(0.15,))
    assert round_trip_ms(quick, fast, fast) == pytest.approx(0.10)
    odd = DeviceSpeed.from_dict({**fast.to_dict(), "frame_ms": 50})
    assert round_trip_ms(quick, odd, odd) == pytest.approx(0.15)
    assert round_trip_ms(None, fast, fast) == 0.0
    # at 0 ms, 60 allreduces and the step pay it: 61 x 0.14 ms less than priced before
    plan = make_plan(CFG, [1.0, 1.0])
    before = predict(MODEL, plan, [Member("me", old, None, GB), Member("b", old, link, GB)])
    after = predict(MODEL, plan, [Member("me", fast, None, GB), Member("b", fast, link, GB)])
    assert before.link_ms - after.link_ms == pytest.approx(60.5 * 0.14, rel=0.01)


def test_emulated_latency_costs_two_allreduces_a_layer_of_n_sends_each():
    two = [ME, member("b", rtt=0.0)]
    plan = make_plan(CFG, [1.0, 1.0])
    base = predict(MODEL, plan, two).ms_per_token
    slow = predict(MODEL, plan, two, LinkEmulation(delay_ms=5.0)).ms_per_token
    # 60 allreduces x 2 sends (worker's partial, rank 0's sum) + the step broadcast
    assert slow - base == pytest.approx(60 * 2 * 5 + 5, rel=0.01)
    three = [ME, member("b", rtt=0.0), member("c", rtt=0.0)]
    assert allreduce_ms(three, LinkEmulation(delay_ms=5.0), 2304) == pytest.approx(15, rel=0.01)


def test_a_resume_point_above_a_later_one_counts_as_the_later_one():
    # a longer wait never cools a machine less: 0.64 at 0.5 ms before 0.35 at 1 ms is noise
    noisy = DeviceSpeed(read_gbps={"q4_1": 2.0}, layer_ms=0.1, gflops=50.0, disk_gbps=1.0,
                        free_bytes=8 * GB, cores=1,
                        resume_ms=((0.5, 0.64), (1.0, 0.35), (2.0, 0.5), (5.0, 0.45)))
    assert [noisy.resume_cost(g) for g in (0.25, 0.5, 1.0, 2.0, 5.0, 9.0)] == pytest.approx(
        [0.175, 0.35, 0.35, 0.45, 0.45, 0.45])


def test_resuming_after_each_wait_is_priced_from_the_slowest_members_curve():
    curve = ((1.0, 0.2), (5.0, 0.6))
    waits = DeviceSpeed(read_gbps={"q4_1": 2.0, "q8_0": 2.4}, layer_ms=0.1, gflops=50.0,
                        disk_gbps=1.0, free_bytes=8 * GB, cores=1, resume_ms=curve)
    assert [waits.resume_cost(g) for g in (0, 0.5, 1, 3, 5, 50)] == pytest.approx(
        [0, 0.1, 0.2, 0.4, 0.6, 0.6])
    assert speed().resume_cost(5.0) == 0  # not measured: priced at nothing, as before
    plan = make_plan(CFG, [1.0, 1.0])
    emu = LinkEmulation(delay_ms=2.0)
    b = member("b", rtt=0.0)
    base = predict(MODEL, plan, [ME, b], emu)
    slow = predict(MODEL, plan, [ME, Member("b", waits, b.link, b.budget)], emu)
    # 60 allreduces keep the ranks waiting 4 ms (two sends); the step, 2 ms and the head's
    # 12.5 ms: past the curve's last point
    assert slow.idle_ms == pytest.approx(60 * 0.5 + 0.6)
    assert slow.ms_per_token - base.ms_per_token == pytest.approx(slow.idle_ms)
    assert slow.link_ms == base.link_ms and slow.to_dict()["idle_ms"] == round(slow.idle_ms, 2)
    assert slow.ttft_ms > base.ttft_ms
    # a link whose echo took 1 ms already holds what a 1 ms wait costs: 0.6 - 0.2 beyond
    far = LinkSpeed(rtt_ms=(1.0,) * 5, mbps=900.0)
    one_ms = predict(MODEL, plan, [Member("me", waits, None, 4 * GB),
                                   Member("b", waits, far, b.budget)], emu)
    assert one_ms.idle_ms == pytest.approx(60 * 0.4 + 0.4)
    # alone, nobody waits on a link
    alone = Member("me", waits, None, 4 * GB)
    assert predict(MODEL, make_plan(CFG, [1.0]), [alone], emu).idle_ms == 0
    # `tpi-chat plan` and the device card say it
    c = choose(MODEL, alone, [Member("b", waits, b.link, b.budget)], {"b"}, emu)
    out = io.StringIO()
    print_plan("m", c, [], 2.0, out)
    assert f"(+{c.prediction.idle_ms:.1f} ms resuming after them)" in out.getvalue()
    assert "+0.30 ms after a 2 ms wait" in speed_note(waits)
    assert "after a" not in speed_note(speed())


def test_workers_answering_together_cost_every_allreduce_and_the_step():
    three = [ME, member("b", rtt=0.3), member("c", rtt=0.3)]
    plan3 = make_plan(CFG, [1.0, 1.0, 1.0])
    base, together = predict(MODEL, plan3, three), predict(MODEL, plan3, three, group_ms=0.3)
    assert together.link_ms - base.link_ms == pytest.approx(60 * 0.3 + 0.15)
    assert together.group_ms == 0.3 and together.to_dict()["group_ms"] == 0.3
    # one worker has no one to answer together with
    two, plan2 = three[:2], make_plan(CFG, [1.0, 1.0])
    assert predict(MODEL, plan2, two, group_ms=0.3).link_ms == predict(MODEL, plan2, two).link_ms


def test_each_set_of_workers_is_priced_by_its_own_probe_or_its_smallest_probed_superset():
    from core.cluster.planner import group_ms

    b, c, d = member("b"), member("c"), member("d")
    groups = {frozenset("bc"): 0.2, frozenset("bcd"): 0.5, frozenset("cd"): 0.3}
    assert group_ms(groups, [ME, b, c]) == 0.2
    assert group_ms(groups, [ME, b, d]) == 0.5  # not probed: as b, c and d together
    assert group_ms(groups, [ME, b]) == 0.0 and group_ms(None, [ME, b, c]) == 0.0
    assert group_ms({frozenset("cd"): 0.3}, [ME, b, c]) == 0.3  # no superset: the worst


def test_two_fast_workers_that_slow_each_other_down_are_not_both_taken():
    fast = [member("b", gbps=8.0, rtt=0.05), member("c", gbps=8.0, rtt=0.05)]
    slow_me = Member("me", speed(gbps=0.5), None, 4 * GB)
    assert choose(MODEL, slow_me, fast).names == ["me", "b", "c"]
    c = choose(MODEL, slow_me, fast, groups={frozenset("bc"): 2.0})
    assert len(c.names) == 2 and c.prediction.group_ms == 0.0
    forced = choose(MODEL, slow_me, fast, forced={"b", "c"}, groups={frozenset("bc"): 2.0})
    assert forced.prediction.group_ms == 2.0


def test_a_window_smaller_than_the_share_adds_disk_reads():
    tight = Member("me", speed(disk=0.05), None, budget=420 * 2**20)  # ~36 MB for layers
    p = predict(MODEL, make_plan(CFG, [1.0]), [tight], window="auto")
    assert p.windows[0] is not None and p.windows[0] < 60
    assert p.stream_ms > 100 and not p.fits
    roomy = predict(MODEL, make_plan(CFG, [1.0]), [ME], window="auto")
    assert roomy.windows == (None,) and p.ms_per_token > roomy.ms_per_token + 100


def test_a_device_that_only_adds_latency_is_left_out_and_told_why():
    c = choose(MODEL, ME, [member("mini-pc", rtt=0.3)], emu=LinkEmulation(delay_ms=2.0))
    assert c.names == ["me"]
    why = c.left_out["mini-pc"]
    assert "link latency" in why and "not needed: the model fits here" in why
    extra = float(why.split("~")[1].split(" ")[0])
    assert 200 < extra < 400  # 60 allreduces x 2 sends x 2 ms, minus the compute it saves


def test_a_fast_link_and_a_fast_device_take_part_with_a_bigger_share():
    c = choose(MODEL, ME, [member("desktop", gbps=6.0, rtt=0.05)])
    assert c.names == ["me", "desktop"]
    assert c.plan.ranks[1].num_cols > c.plan.ranks[0].num_cols
    alone = predict(MODEL, make_plan(CFG, [1.0]), [ME]).ms_per_token
    assert c.prediction.ms_per_token < alone


def test_forcing_a_device_in_keeps_it_even_when_slower():
    slow = member("tablet", rtt=0.3)
    c = choose(MODEL, ME, [slow], forced={"tablet"}, emu=LinkEmulation(delay_ms=5.0))
    assert c.names == ["me", "tablet"] and c.left_out == {}
    alone = choose(MODEL, ME, [slow], emu=LinkEmulation(delay_ms=5.0))
    assert c.prediction.ms_per_token > alone.prediction.ms_per_token
    with pytest.raises(TpiError, match="phone"):
        choose(MODEL, ME, [slow], forced={"phone"})


def test_a_model_that_does_not_fit_here_takes_the_device_despite_latency():
    small = Member("me", speed(), None, budget=420 * 2**20)
    c = choose(MODEL, small, [member("nas", rtt=2.0, budget=4 * GB)],
               emu=LinkEmulation(delay_ms=2.0))
    assert c.names == ["me", "nas"] and c.prediction.fits
    assert c.plan.ranks[1].num_cols > c.plan.ranks[0].num_cols  # the memory is there


def test_the_choice_is_the_best_subset_and_adding_devices_never_slows_the_prediction():
    devices = [member("a", gbps=3.0, rtt=0.2), member("b", gbps=1.0, rtt=1.5),
               member("c", gbps=2.5, rtt=0.1)]
    emu = LinkEmulation(delay_ms=0.5)
    before = float("inf")
    for k in range(len(devices) + 1):
        c = choose(MODEL, ME, devices[:k], emu=emu)
        assert c.prediction.ms_per_token <= before + 1e-9
        before = c.prediction.ms_per_token
    from itertools import combinations

    from core.cluster.planner import best_for
    every = [best_for(MODEL, [ME, *s], emu, None)[2].ms_per_token
             for k in range(4) for s in combinations(devices, k)]
    assert before == pytest.approx(min(every))


def test_a_hostile_measurement_is_clipped_not_trusted():
    d = DeviceSpeed.from_dict({"read_gbps": {"q4_1": 0, "bogus": 5, "q8_0": float("nan")},
                               "layer_ms": -3, "gflops": "fast", "disk_gbps": 1e99,
                               "free_bytes": -1, "cores": 10**9})
    assert set(d.read_gbps) == {"q4_1", "q8_0"}
    assert d.read_gbps["q4_1"] > 0 and d.read_gbps["q8_0"] == 1.0
    assert d.layer_ms == 0 and d.gflops == 10.0 and d.disk_gbps <= 1000
    assert d.free_bytes == 0 and d.cores == 4096
    assert d.msg_ms == 0 and d.frame_ms == 0  # not sent: links priced by their echoes
    lying = DeviceSpeed.from_dict({"msg_ms": 1e9, "frame_ms": -1})
    assert lying.msg_ms == 5.0 and lying.frame_ms == 0
    assert DeviceSpeed.from_dict({"msg_ms": "fast"}).msg_ms == 0
    assert DeviceSpeed.from_dict("not a dict").read_gbps == {}
    curve = DeviceSpeed.from_dict({"resume_ms": [[2, 1e9], [-1, 3], [2, 7], "x", [1, "y"],
                                                 [float("inf"), 1], [1e9, 4]]
                                   + [[5, 1]] * 10**5})  # only the first 16 are read
    assert curve.resume_ms == ((1.0, 0.0), (2.0, 50.0), (5.0, 1.0), (1000.0, 4.0))
    assert DeviceSpeed.from_dict({"resume_ms": {"2": 1}}).resume_ms == ()
    assert DeviceSpeed.from_dict(curve.to_dict()) == curve
    m = Member("x", d, LinkSpeed((0.1,)), GB)
    assert predict(MODEL, make_plan(CFG, [1.0, 1.0]), [ME, m]).ms_per_token > 0
