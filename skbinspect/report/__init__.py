"""The post-mortem report: tun/tap queues, their drops in the trace and their counters tied together
(:mod:`.correlate`), and its rendering (:mod:`.render`)."""
