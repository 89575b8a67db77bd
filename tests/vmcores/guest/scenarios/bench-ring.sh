# The "bench-ring" boot: one tap queue with a 65,536-slot ring, filled completely and held unread,
# for bench/bench_ring.py (ring --entries --json against a naive one-Object-per-slot walk).
hold bench-ring tun tapbig /run/bench-ring --comm bench-holder
$IP link set tapbig txqueuelen 65536 up
skblab send tapbig 65536 --start 400000 >> /out/senders
sleep 1
capture_common
mkdir -p /out/holders/bench-ring
ctl bench-ring info /out/holders/bench-ring/info > /dev/null
wait_host
ctl bench-ring drain /out/holders/bench-ring/drained > /dev/null
finish
