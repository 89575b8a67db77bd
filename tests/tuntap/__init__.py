"""Pure tests of skbinspect.tuntap: packet decoding, ptr_ring analysis, ring entries."""
