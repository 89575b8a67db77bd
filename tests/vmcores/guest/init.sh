#!/bin/sh
# PID 1 of a lab guest.  Mounts what a scenario needs, loads the modules listed in
# /lib/modules/load.order, then runs /scenario.sh (one of guest/scenarios/*.sh) with the helpers below.
# The host talks to us over the second serial port (/dev/ttyS1): we say "READY" when the state to be
# dumped is frozen and captured, the host dumps the paused guest, resumes it and answers "go".
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mkdir -p /run /out && mount -t tmpfs run /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || mount -t debugfs debugfs /sys/kernel/debug
T=/sys/kernel/tracing
[ -e $T/trace ] || T=/sys/kernel/debug/tracing
IP=/usr/sbin/ip
CTL=/dev/ttyS1

say() { echo "$*" > $CTL; echo "skblab: $*"; }
fail() { say "FAIL $*"; sleep 1; poweroff -f; }

while read -r mod; do
    [ -n "$mod" ] && { insmod /lib/modules/$mod.ko || fail "insmod $mod"; }
done < /lib/modules/load.order

stty -F $CTL raw -echo 2>/dev/null
[ -b /dev/vda ] && [ -b /dev/vdb ] || fail "no virtio disks (/dev/vda, /dev/vdb)"
# No IPv6: router solicitations and MLD reports would keep arriving in the rings and the trace.
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
$IP link set lo up

# ctl HOLDER COMMAND...: one command to a skblab holder, prints its one-line reply.
ctl() { h=$1; shift; echo "$*" > /run/$h/ctl; read -r r < /run/$h/reply; echo "$r"; }
# hold NAME skblab-args...: start a holder in /run/NAME and wait until its queues are open.
hold() {
    h=$1; shift
    mkdir -p /run/$h
    /bin/skblab "$@" &
    i=0
    while [ ! -s /run/$h/pid ]; do
        i=$((i + 1)); [ $i -gt 200 ] && fail "holder $h did not start"
        sleep 0.05
    done
}
# wait_host: tell the host the state is captured and wait for its answer (after the dump).
# wait_host: say READY; the host pauses the guest, dumps it, resumes it and then writes "go" at the
# start of the control disk (/dev/vdb), which we poll.  (Host-to-guest bytes on the serial port were
# lost across QEMU's stop/cont under TCG, and the console's transmitter can stall after it: from here
# on our output goes to the control port, which the host logs to ctl.log.)
wait_host() {
    say READY
    exec > $CTL 2>&1
    while :; do
        echo 1 > /proc/sys/vm/drop_caches
        [ "$(dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -c 2)" = go ] && break
        sleep 0.2
    done
}
# finish: write /out to the output disk (a tar stream on /dev/vda) and power off.
finish() {
    tar -cf /dev/vda -C /out . && sync || fail "writing the output disk"
    say DONE
    poweroff -f
}
# capture_common: the guest's own view, frozen, into /out.
capture_common() {
    uname -r > /out/release
    cat /proc/cmdline > /out/cmdline
    nproc > /out/nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo > /out/nproc
    $IP -j -s -s link > /out/ip-link.json
    $IP -s -s link > /out/ip-link.txt
    cat /proc/net/softnet_stat > /out/softnet_stat
    cat /proc/net/dev > /out/proc-net-dev
    mkdir -p /out/trace/top /out/formats
    cat $T/trace > /out/trace/top/trace
    for inst in $T/instances/*; do
        [ -d "$inst" ] || continue
        n=${inst##*/}
        mkdir -p /out/trace/instances/$n
        cat $inst/trace > /out/trace/instances/$n/trace
        for f in buffer_size_kb buffer_subbuf_size_kb; do
            [ -e $inst/$f ] && cat $inst/$f > /out/trace/instances/$n/$f
        done
    done
    for e in $T/events/skb/* $T/events/net/net_dev_queue; do
        [ -e $e/format ] && cat $e/format > /out/formats/$(basename $(dirname $e)):$(basename $e)
    done
    cat $T/buffer_size_kb > /out/trace/top/buffer_size_kb
}

echo "skblab: $(uname -r) up, running $(cat /scenario.name)" > /dev/console
set -x
. /scenario.sh
fail "scenario returned"
