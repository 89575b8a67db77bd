# The "bench-trace" boot: a trace instance of 2 x 24 MiB filled with skb drops, for bench/bench_trace.py
# (trace --json and drops on 500,000+ events, against a naive decoder that reads every event through
# drgn Objects).
#   tapbench: one tap queue held open and never read (a 16-slot ring, full at once).  Two senders, one
#   per CPU, push 300,000 frames each into it; each frame is an skb:kfree_skb (FULL_RING) event in the
#   instance "bench" (no stacks, so that many events fit).  The top-level buffer records nothing.
mkdir $T/instances/bench
echo 0 > $T/instances/bench/options/stacktrace
echo 24576 > $T/instances/bench/buffer_size_kb
echo 1 > $T/instances/bench/events/skb/kfree_skb/enable

hold bench-trace tun tapbench /run/bench-trace --comm bench-holder
$IP link set tapbench txqueuelen 16 up
skblab send tapbench 300000 --start 500000 >> /out/senders &
s1=$!
skblab send tapbench 300000 --start 900000 >> /out/senders &
s2=$!
wait $s1 $s2
echo 0 > $T/instances/bench/tracing_on
sleep 1

# A light capture: the text of 500,000+ events would not fit in the guest's memory.
uname -r > /out/release
nproc > /out/nproc
mkdir -p /out/trace/instances/bench
head -c 4096 $T/instances/bench/trace > /out/trace/instances/bench/trace
cat $T/instances/bench/buffer_size_kb > /out/trace/instances/bench/buffer_size_kb

wait_host
finish
