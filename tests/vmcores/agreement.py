"""Issue 14: ``report`` and ``drops`` agree.  Per device, the traced drops the report ties equal what
``drops`` attributes to that device and to the devices that feed it (``mt0 (via v0)``), and the drops
that may be one of several devices' are the same on both sides, counted once."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Dict, FrozenSet, Optional, Tuple

#: ``drops``' attribution keys: ``mt0``, ``mq0 queue 1``, ``mt0 (via v0)``, ``mt0 or it0 (via br0)``.
_KEY = re.compile(r"^(?P<devs>.+?)(?: queue (?P<q>\d+))?(?: \(via (?P<via>[^)]+)\))?$")

Tally = Tuple[Counter, Counter]  # (device, feeding device or None) -> drops; candidates -> shared drops


def drops_side(drops: Dict[str, Any]) -> Tally:
    sole: Counter = Counter()
    shared: Counter = Counter()
    for g in drops["groups"]:
        for key, n in (g.get("attributed_devices") or {}).items():
            m = _KEY.match(key)
            assert m, key
            devs = m.group("devs").split(" or ")
            if len(devs) == 1:
                sole[(devs[0], m.group("via"))] += n
            else:
                shared[frozenset(devs)] += n
    return sole, shared


def report_side(rep: Dict[str, Any]) -> Tally:
    sole: Counter = Counter()
    shared: Counter = Counter()
    for v in rep["verdicts"]:
        for d in v["drops"]:
            if d["tied_by"].endswith("(ambiguous)"):
                continue  # counted once, in shared_drops
            via: Optional[str] = None
            m = re.match(r"topology \(via (.+)\)$", d["tied_by"])
            if m:
                via = m.group(1)
            sole[(v["device"], via)] += d["count"]
    for s in rep["shared_drops"]:
        shared[frozenset(s["candidates"])] += s["count"]
    return sole, shared


def per_device(t: Counter) -> Dict[str, int]:
    out: Counter = Counter()
    for (dev, _), n in t.items():
        out[dev] += n
    return dict(out)


def assert_agree(drops: Dict[str, Any], rep: Dict[str, Any]) -> None:
    d_sole, d_shared = drops_side(drops)
    r_sole, r_shared = report_side(rep)
    # per device, the report's count is what drops attributes to it
    assert (
        per_device(d_sole)
        == per_device(r_sole)
        == {
            v["device"]: sum(x["drop_count"] for x in rep["verdicts"] if x["device"] == v["device"])
            for v in rep["verdicts"]
            if any(x["drop_count"] for x in rep["verdicts"] if x["device"] == v["device"])
        }
    )
    # ... through the same feeding devices, and the shared drops are the same, counted once
    assert d_sole == r_sole
    shared: Dict[FrozenSet[str], int] = dict(d_shared)
    assert shared == dict(r_shared)
    # every ring-full drop at a tun/tap enqueue function is either tied or said to be unattributed
    at_sites = sum(
        g["count"]
        for g in drops["groups"]
        if (g["location_symbol"] or "").split("+")[0] in ("tun_net_xmit", "tap_handle_frame")
        and (g["reason"] in (None, "FULL_RING"))
    )
    unattributed = sum(u["count"] for u in rep["unattributed_drops"])
    assert sum(d_sole.values()) + sum(d_shared.values()) + unattributed == at_sites
