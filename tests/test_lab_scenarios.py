"""The lab's seeded scenario generator (tests/vmcores/scenarios.py): pure, no guest."""

from __future__ import annotations

import json
import re
from collections import Counter

from tests.vmcores.scenarios import CI_SEEDS, boot_name, generate, seed_of

SEEDS = range(300)


def test_same_seed_same_scenario() -> None:
    for s in (0, 1, 7, 12345):
        assert generate(s).describe() == generate(s).describe()
        assert generate(s).script() == generate(s).script()
    assert generate(1).script() != generate(2).script()


def test_description_is_json_and_names_the_boot() -> None:
    d = generate(3).describe()
    assert json.loads(json.dumps(d)) == d
    assert d["boot"] == "random-3" and d["seed"] == 3
    assert seed_of(boot_name(42)) == 42 and seed_of("offlab") is None and seed_of("random-x") is None


def test_groups_are_consistent() -> None:
    for s in SEEDS:
        sc = generate(s)
        names = [d for g in sc.groups for d in g.devices]
        assert len(names) == len(set(names)), sc.short()  # groups are independent
        assert all(len(n) <= 15 for n in names)  # IFNAMSIZ
        assert len({g.holder for g in sc.groups}) == len(sc.groups)
        starts = sorted(g.start for g in sc.groups)
        for g in sc.groups:
            assert sorted(g.held + g.read) == list(range(g.queues)), sc.short()
            assert not set(g.held) & set(g.read)
            assert g.frames >= 2 * g.ring * g.queues  # enough to fill every held queue
            if g.kind == "tun":
                assert g.lower == "none" and g.feed == g.device and g.lower_devices == []
            else:
                assert g.lower in ("veth", "dummy") and g.feed in g.lower_devices and not g.vhost
            if g.vhost:
                assert g.kind == "tun" and g.queues == 1 and g.held == [0] and g.ring >= 128
        # frame sequence numbers of two groups never overlap
        for a, b in zip(starts, starts[1:]):
            assert b - a > max(g.frames for g in sc.groups)
        if sc.trace.small_buffer:
            assert sc.trace.buffer_kb <= 64
        else:
            assert sc.trace.buffer_kb >= 1024


def test_the_seeds_cover_every_variation() -> None:
    seen: Counter = Counter()
    for s in SEEDS:
        sc = generate(s)
        t = sc.trace
        seen.update(
            [
                f"instance={t.instance is not None}",
                f"stacks={t.stacks}",
                f"net={t.net_events}",
                f"consume={t.consume}",
                f"small={t.small_buffer}",
                f"groups={len(sc.groups)}",
            ]
        )
        for g in sc.groups:
            seen.update([f"kind={g.kind}", f"lower={g.lower}", f"queues={g.queues}", f"vhost={g.vhost}"])
            seen.update(["held and read" if g.held and g.read else "held only" if g.held else "read only"])
    for want in (
        "instance=True",
        "instance=False",
        "stacks=True",
        "stacks=False",
        "net=True",
        "net=False",
        "consume=True",
        "consume=False",
        "small=True",
        "small=False",
        "groups=1",
        "groups=3",
        "kind=tun",
        "kind=macvtap",
        "kind=ipvtap",
        "lower=veth",
        "lower=dummy",
        "queues=4",
        "vhost=True",
        "held and read",
        "held only",
        "read only",
    ):
        assert seen[want] > 0, want


def test_script_sets_up_what_the_description_says() -> None:
    for s in SEEDS:
        sc = generate(s)
        text = sc.script()
        tr = sc.trace_dir
        assert f"echo {sc.trace.buffer_kb} > {tr}/buffer_size_kb" in text
        assert f"echo {int(sc.trace.stacks)} > {tr}/options/stacktrace" in text
        assert (f"{tr}/events/net/net_dev_queue/enable" in text) == sc.trace.net_events
        assert (f"{tr}/events/skb/consume_skb/enable" in text) == sc.trace.consume
        assert (f"mkdir {tr}" in text) == (sc.trace.instance is not None)
        assert text.index("tracing_on") < text.index("skblab send")  # tracing before any traffic
        for g in sc.groups:
            assert re.search(rf"^hold {g.holder} (tun|tap) .* --queues {g.queues}\b", text, re.M)
            assert f"txqueuelen {g.ring} up" in text
            for q in g.read:
                assert f"ctl {g.holder} consume {q} 0" in text
            for q in g.held:
                assert f"ctl {g.holder} consume {q} " not in text
            assert ("vhost-attach 0" in text) >= g.vhost
            assert f"skblab send {g.feed} " in text
        # the capture runs after every sender, and the drain after the dump
        assert text.rindex("skblab send") < text.index("capture_common") < text.index("wait_host")
        assert text.index("wait_host") < text.index("drain") < text.index("finish")


def test_ci_seeds_are_distinct() -> None:
    assert len(set(CI_SEEDS)) == len(CI_SEEDS) >= 1
