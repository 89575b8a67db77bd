"""The kernel's ftrace ring buffers read from memory: the pure decoders of sub-buffers, event formats
and print formats (:mod:`.decode`), the reader of trace arrays, buffers and event formats
(:mod:`.reader`), the skb events (:mod:`.skb_events`), drops grouped by reason (:mod:`.drops`), which
records a command shows (:mod:`.select`) and their rendering (:mod:`.render`)."""
