# The "live" boot: a guest that keeps running for tests over QMP, with traffic still flowing.
#   taplive: 2 queues; queue 0 has a reader consuming continuously, queue 1 is held unread (full).
#   On the host's word, taps are created and deleted in a loop (churn_loop below).
hold live tun taplive /run/live --queues 2 --mq --comm live-holder
$IP link set taplive txqueuelen 512 up
ctl live consume 0 2000 > /dev/null
echo 1 > $T/events/skb/kfree_skb/enable
skblab send taplive 0 --forever --pace 20 > /dev/null &
sleep 2
capture_common
ctl live info /out/live-info > /dev/null
# Tap churn (issue 17: reads while devices come and go), started by the host writing "churn" on the
# control disk and stopped by any other word: persistent taps churn0..churn7 made and deleted with ip
# (no queue attached), and every fourth round a tap churnq0..churnq3 whose 2 queues a skblab holder opens,
# fills with a few frames and closes by exiting (the device goes with its last queue).
churn_loop() {
    i=0
    while :; do
        if [ $((i % 8)) = 0 ]; then
            echo 1 > /proc/sys/vm/drop_caches
            [ "$(dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -c 5)" = churn ] || { sleep 0.5; continue; }
        fi
        $IP tuntap add dev churn$((i % 8)) mode tap && $IP link set churn$((i % 8)) up
        $IP tuntap del dev churn$(((i + 5) % 8)) mode tap
        if [ $((i % 4)) = 0 ]; then
            j=$(((i / 4) % 4)) k=$(((i / 4 + 2) % 4))
            [ -s /run/churnq$k/pid ] && ctl churnq$k exit && rm -f /run/churnq$k/pid
            mkdir -p /run/churnq$j
            /bin/skblab tun churnq$j /run/churnq$j --queues 2 --mq --comm churn-holder &
            n=0
            while [ ! -s /run/churnq$j/pid ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
            $IP link set churnq$j up && /bin/skblab send churnq$j 20 --start $i
        fi
        i=$((i + 1))
    done > /dev/null 2>&1
}
churn_loop &
say "INFO $(cat /out/live-info | tr '\n' ' ')"
wait_host
finish
