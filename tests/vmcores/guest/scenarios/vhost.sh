# The "vhost" boot: a tap queue used as the RX backend of a vhost-net instance that has no receive
# buffers, so vhost has taken a batch of entries out of the ring into its rxq (vhost_net_buf) and
# stopped.  After the dump the backend is removed, which puts the batch back at the head of the ring
# (ptr_ring_unconsume; the ring keeps room for it, or vhost would have to free what does not fit),
# and the queue is drained: the drained frames are the rxq batch then the ring.
hold vhost tun tapvh /run/vhost --comm vhost-holder
$IP link set tapvh txqueuelen 300 up
skblab send tapvh 200 --start 500000 >> /out/senders
ctl vhost vhost-attach 0 > /run/vhost/attach.reply
sleep 1
skblab send tapvh 50 --start 600000 >> /out/senders
sleep 1
capture_common
mkdir -p /out/holders/vhost
ctl vhost info /out/holders/vhost/info > /dev/null
cp /run/vhost/attach.reply /out/holders/vhost/
wait_host
ctl vhost vhost-detach > /out/holders/vhost/detach.reply
ctl vhost drain /out/holders/vhost/drained > /dev/null
finish
