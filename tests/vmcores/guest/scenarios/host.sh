# The "host" boot: skbinspect run INSIDE the guest with no options, as an engineer runs it on a Debian
# host that has the kernel's -dbg package installed.  /dev/vdc is the live-host image (hostfs.py): the
# host's Python with drgn, click and rich, skbinspect installed from the checkout, and the -dbg files,
# bind-mounted onto their standard paths.
#
# 1. lab.sh runs unchanged (tun-full, tun-mq, macvtap-full, trace-instance).  Where the lab boot says
#    READY and the host dumps the guest (wait_host), this boot runs skbinspect against its own live
#    kernel (/proc/kcore) on the same frozen state; lab.sh then drains the rings, as in the lab boot.
# 2. finish: traffic flowing on taplive (a reader consuming queue 0, queue 1 unread) while skbinspect
#    runs `--json ring --entries` $RUNS times in a row; then as a non-root user; then with the -dbg
#    files gone.  Every run's stdout, stderr, exit code and wall time go to /out/skbinspect/.
#    In step 1 every run is made again without the -dbg files (BTF and kallsyms), as btf-NAME.

RUNS=${skblab_runs:-50}
S=/out/skbinspect
mkdir -p $S /sysroot
mount -t ext4 -o ro /dev/vdc /sysroot || fail "mounting the live-host image /dev/vdc"
while read -r d; do
    [ -n "$d" ] || continue
    mkdir -p /$d && mount --bind /sysroot/$d /$d || fail "bind-mounting /$d"
done < /sysroot/.skblab-binds
# The interpreter sits at the lab host's own prefix, which may be under /root (pyenv); on a Debian host
# python3 is /usr/bin/python3.  Let the unprivileged user reach it, nothing else changes for them.
chmod 755 /root
export PATH=/usr/local/bin:/bin:/sbin:/usr/sbin HOME=/root
printf 'root:x:0:0:root:/root:/bin/sh\nengineer:x:1000:1000:engineer:/tmp:/bin/sh\n' > /etc/passwd
printf 'root:x:0:\nengineer:x:1000:\n' > /etc/group
uptime_cs() { read -r u _ < /proc/uptime; echo "${u%.*}${u#*.}"; }

# skb NAME ARGS...: run skbinspect ARGS as root; NAME.out, NAME.err, NAME.rc, NAME.cs (centiseconds)
skb() {
    n=$1; shift
    t=$(uptime_cs)
    timeout 900 skbinspect "$@" > $S/$n.out 2> $S/$n.err
    echo $? > $S/$n.rc
    echo $(( $(uptime_cs) - t )) > $S/$n.cs
}
# skb_user NAME ARGS...: the same as the unprivileged user "engineer"
skb_user() {
    n=$1; shift
    t=$(uptime_cs)
    timeout 900 su engineer -s /bin/sh -c "PATH=$PATH skbinspect $*" > $S/$n.out 2> $S/$n.err
    echo $? > $S/$n.rc
    echo $(( $(uptime_cs) - t )) > $S/$n.cs
}

# Replaces init.sh's wait_host (lab.sh calls it once the state is frozen and captured).
wait_host() {
    say "STEP skbinspect on the frozen lab state"
    skb info info
    skb info-json --json info
    skb ring --json ring --entries --stale
    skb reasons --json reasons
    skb stats --json stats
    skb trace-json --json trace --stacks
    skb trace-skbinst-json --json trace --stacks --instance skbinst
    skb trace-text trace --stacks
    skb trace-skbinst-text trace --stacks --instance skbinst
    skb ring-text ring tap0
    skb drops-json --json drops
    skb report-json --json report

    # No debug package: the same runs with /usr/lib/debug unmounted, on the same frozen state (types from
    # /sys/kernel/btf, symbols from /proc/kallsyms); then with kptr_restrict hiding /proc/kallsyms'
    # addresses (kallsyms from kernel memory instead).  /usr/lib/debug is mounted again afterwards.
    say "STEP skbinspect without the -dbg files"
    umount /usr/lib/debug || fail "unmounting /usr/lib/debug"
    [ -e /usr/lib/debug/boot ] && fail "/usr/lib/debug still populated"
    skb btf-info info
    skb btf-info-json --json info
    skb btf-ring --json ring --entries --stale
    skb btf-reasons --json reasons
    skb btf-stats --json stats
    skb btf-trace-json --json trace --stacks
    skb btf-trace-skbinst-json --json trace --stacks --instance skbinst
    skb btf-trace-text trace --stacks
    skb btf-trace-skbinst-text trace --stacks --instance skbinst
    skb btf-ring-text ring tap0
    skb btf-drops-json --json drops
    skb btf-report-json --json report
    restrict=$(cat /proc/sys/kernel/kptr_restrict)
    echo 2 > /proc/sys/kernel/kptr_restrict
    skb btf-kptr-ring --json ring --entries --stale
    skb btf-kptr-info-json --json info
    echo "$restrict" > /proc/sys/kernel/kptr_restrict
    mount --bind /sysroot/usr/lib/debug /usr/lib/debug || fail "mounting /usr/lib/debug again"
}

# Replaces init.sh's finish (lab.sh calls it after draining the rings).
finish() {
    say "STEP traffic flowing, $RUNS ring runs"
    hold live tun taplive /run/live --queues 2 --mq --comm live-holder
    $IP link set taplive txqueuelen 512 up
    ctl live consume 0 2000 > /dev/null
    echo 1 > $T/tracing_on
    skblab send taplive 0 --forever --pace 20 > /dev/null &
    sender=$!
    sleep 1
    i=1
    while [ $i -le $RUNS ]; do
        skb race-$i --json ring --entries
        [ $((i % 10)) -eq 0 ] && say "STEP ring run $i of $RUNS, exit $(cat $S/race-$i.rc)"
        i=$((i + 1))
    done
    kill $sender
    ctl live info /out/live-info > /dev/null
    echo $RUNS > $S/runs

    say "STEP non-root user, then without the -dbg files"
    skb_user nonroot ring tap0
    umount /usr/lib/debug || fail "unmounting /usr/lib/debug"
    [ -e /usr/lib/debug/boot ] && fail "/usr/lib/debug still populated"
    skb nodbg ring tap0

    tar -cf /dev/vda -C /out . && sync || fail "writing the output disk"
    say DONE
    poweroff -f
}

. /scenarios/lab.sh
