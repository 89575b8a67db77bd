"""tun, tap, macvtap and ipvtap devices: the devices and their queues (:mod:`.devices`), each queue's
``ptr_ring`` (:mod:`.ptr_ring`), the skbs and XDP frames in it (:mod:`.entries`), their decoded headers
(:mod:`.packet`), and the ``ring`` command's rendering (:mod:`.render`)."""
