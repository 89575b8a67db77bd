"""Reading kernel memory fast and safely: bulk reads (:mod:`.bulk`), integer columns from packed records
(:mod:`.columns`), struct member layouts (:mod:`.layout`) and values cached per drgn program
(:mod:`.cache`)."""
