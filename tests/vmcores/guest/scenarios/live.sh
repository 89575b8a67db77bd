# The "live" boot: a guest that keeps running for tests over QMP, with traffic still flowing.
#   taplive: 2 queues; queue 0 has a reader consuming continuously, queue 1 is held unread (full).
hold live tun taplive /run/live --queues 2 --mq --comm live-holder
$IP link set taplive txqueuelen 512 up
ctl live consume 0 2000 > /dev/null
echo 1 > $T/events/skb/kfree_skb/enable
skblab send taplive 0 --forever --pace 20 > /dev/null &
sleep 2
capture_common
ctl live info /out/live-info > /dev/null
say "INFO $(cat /out/live-info | tr '\n' ' ')"
wait_host
finish
