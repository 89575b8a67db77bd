# The "offlab" boot (issue 14): a setup off the lab's, to check that report and drops tie drops right.
#   mq0   tun, 4 queues (64 slots): queues 1 and 3 read by consumers, 0 and 2 held unread -> two full
#         queues whose FULL_RING drops the trace cannot tell apart per queue
#   mt0   macvtap on veth v1, fed from its peer v0
#   it0   ipvtap (L2) on veth v3, fed from its peer v2
#   mt1   macvtap on veth v5, fed from v4 by the IP stack (fragmented pings): net events name v4/v5 only
# The top-level trace records skb:kfree_skb, skb:consume_skb, net:net_dev_queue and net:netif_rx,
# WITHOUT the stacktrace option: macvtap and ipvtap drops are told apart by net events and topology only.

echo 1 > $T/events/skb/kfree_skb/enable
echo 1 > $T/events/skb/consume_skb/enable
echo 1 > $T/events/net/net_dev_queue/enable
echo 1 > $T/events/net/netif_rx/enable

hold offlab-mq tun mq0 /run/offlab-mq --queues 4 --mq --comm mq-holder
$IP link set mq0 txqueuelen 64 up
ctl offlab-mq consume 1 0 > /run/offlab-mq/consume1.reply
ctl offlab-mq consume 3 0 > /run/offlab-mq/consume3.reply
skblab send mq0 900 --start 700000 >> /out/senders

$IP link add v0 type veth peer name v1
$IP link set v1 up
$IP link set v0 up
$IP link add link v1 name mt0 type macvtap mode bridge
$IP link set mt0 txqueuelen 100 up
idx=$(cat /sys/class/net/mt0/ifindex)
hold offlab-mt tap /dev/tap$idx /run/offlab-mt --comm mt-holder
skblab send v0 300 --start 800000 --pace 50 >> /out/senders

$IP link add v2 type veth peer name v3
$IP link set v3 up
$IP link set v2 up
$IP link add link v3 name it0 type ipvtap mode l2
$IP link set it0 txqueuelen 80 up
idx=$(cat /sys/class/net/it0/ifindex)
hold offlab-it tap /dev/tap$idx /run/offlab-it --comm it-holder
skblab send v2 150 --start 900000 --pace 50 >> /out/senders

# mt1: macvtap on veth v5, fed from v4 through the IP stack (dev_queue_xmit: a net_dev_queue on v4 and a
# netif_rx on v5, none on mt1): big pings to mt1's MAC, each sent as fragments that fill its ring
$IP link add v4 type veth peer name v5
$IP link set v5 up
$IP link set v4 up
$IP link add link v5 name mt1 type macvtap mode bridge
$IP link set mt1 txqueuelen 50 up
idx=$(cat /sys/class/net/mt1/ifindex)
hold offlab-mt1 tap /dev/tap$idx /run/offlab-mt1 --comm mt1-holder
$IP addr add 10.9.4.1/24 dev v4
$IP neigh add 10.9.4.2 lladdr $(cat /sys/class/net/mt1/address) dev v4 nud permanent
ping -c 4 -s 60000 -W 1 -q 10.9.4.2 >> /out/senders 2>&1

sleep 1
echo 0 > $T/tracing_on
sleep 1

capture_common
for h in offlab-mq offlab-mt offlab-it offlab-mt1; do
    mkdir -p /out/holders/$h
    ctl $h info /out/holders/$h/info > /dev/null
done
cp /run/offlab-mq/*.reply /out/holders/offlab-mq/

wait_host

for h in offlab-mq offlab-mt offlab-it offlab-mt1; do
    ctl $h drain /out/holders/$h/drained > /dev/null
done
finish
