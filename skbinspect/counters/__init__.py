"""Drop counters and their names: per-CPU softnet, device core and driver counters and drop_monitor's
state (:mod:`.stats`), the target's own drop-reason table (:mod:`.reasons`), and their rendering
(:mod:`.render`)."""
