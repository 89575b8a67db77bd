# The "lab" boot: every base scenario in one guest, each with its own devices and holder process.
#   tun-full       tap0: one queue held open and unread; more frames than tx_queue_len -> FULL_RING
#   tun-mq         tapmq: 4 queues, one disabled (IFF_DETACH_QUEUE), one partly read (stale window)
#   macvtap-full   macvtap0 on veth0: /dev/tap<ifindex> held unread, broadcasts into veth1 -> FULL_RING
#   ipvtap-full    ipvtap0 (L2) on veth2: /dev/tap<ifindex> held unread, broadcasts into veth3 -> FULL_RING
#   trace-instance instance "skbinst": small buffer (and sub-buffer on 6.8+), kfree_skb with a
#                  per-event stacktrace trigger, wrapped by extra drops on tap0
# Sizes come from the environment the host passes on the kernel command line (skblab.*), with defaults.

# Tracing first, so the whole story is recorded.
echo 1 > $T/options/stacktrace
echo 1 > $T/events/skb/kfree_skb/enable
echo 1 > $T/events/skb/consume_skb/enable
mkdir $T/instances/skbinst
echo 32 > $T/instances/skbinst/buffer_size_kb
[ -e $T/instances/skbinst/buffer_subbuf_size_kb ] && echo 8 > $T/instances/skbinst/buffer_subbuf_size_kb
echo 1 > $T/instances/skbinst/events/skb/kfree_skb/enable
echo stacktrace > $T/instances/skbinst/events/skb/kfree_skb/trigger

# tun-full
hold tun-full tun tap0 /run/tun-full --comm tun-full
$IP link set tap0 up
skblab send tap0 1300 >> /out/senders

# tun-mq
hold tun-mq tun tapmq /run/tun-mq --queues 4 --mq --comm tun-mq
$IP link set tapmq txqueuelen 256 up
skblab send tapmq 600 --start 100000 >> /out/senders
ctl tun-mq read 0 21 > /run/tun-mq/read.reply
# Disable queue 1: its ring is purged and the kernel moves the last enabled queue into its slot.
ctl tun-mq disable 1 > /run/tun-mq/disable.reply

# macvtap-full
$IP link add veth0 type veth peer name veth1
$IP link set veth1 up
$IP link set veth0 up
$IP link add link veth0 name macvtap0 type macvtap mode bridge
$IP link set macvtap0 up
idx=$(cat /sys/class/net/macvtap0/ifindex)
hold macvtap-full tap /dev/tap$idx /run/macvtap-full --comm macvtap-full
skblab send veth1 700 --start 200000 --pace 50 >> /out/senders

# ipvtap-full: ipvlan hands broadcasts to its L2 slaves from a work queue (netif_rx on ipvtap0), and
# tap_handle_frame queues them on the ring; a full ring counts in ipvlan's per-CPU rx_errs.
$IP link add veth2 type veth peer name veth3
$IP link set veth3 up
$IP link set veth2 up
$IP link add link veth2 name ipvtap0 type ipvtap mode l2
$IP link set ipvtap0 txqueuelen 300 up
idx=$(cat /sys/class/net/ipvtap0/ifindex)
hold ipvtap-full tap /dev/tap$idx /run/ipvtap-full --comm ipvtap-full
skblab send veth3 450 --start 400000 --pace 50 >> /out/senders

# trace-instance: wrap the instance buffer with more FULL_RING drops on tap0.
skblab send tap0 1500 --start 300000 >> /out/senders

sleep 1
echo 0 > $T/tracing_on
echo 0 > $T/instances/skbinst/tracing_on
sleep 1

capture_common
for h in tun-full tun-mq macvtap-full ipvtap-full; do
    mkdir -p /out/holders/$h
    ctl $h info /out/holders/$h/info > /dev/null
    cp /run/$h/consumed /out/holders/$h/consumed 2>/dev/null
done
cp /run/tun-mq/*.reply /out/holders/tun-mq/

wait_host

for h in tun-full tun-mq macvtap-full ipvtap-full; do
    ctl $h drain /out/holders/$h/drained > /dev/null
done
finish
