"""What runs inside the VM: the guest layout, its users, and the busybox ``/init``.

One ``/init`` serves both ways a job can arrive, so cold and warm VMs run the same code:
a cold VM finds its job in the initramfs (a second cpio appended to the base image); a warm VM
finds none, prints ``<nonce> READY`` on its channel and reads ``JOB <length>`` plus that many
bytes of a cpio, unpacks it, and carries on exactly as a cold VM.

The channel is a virtio console (``/dev/hvc0``, QEMU's stdio), not the 8250 UART: the UART
receives ~30 KB/s under TCG (one interrupt per FIFO's worth), the virtio queue megabytes. The
UART stays the kernel's console, and QEMU sends it to its stderr for diagnostics.

Everything runs with no-new-privs (set before anything else, inherited by all). The job runs as
an unprivileged user with a process limit, under PID 1 of a fresh PID namespace, so that when
the job's main process exits (or is killed at the timeout) the kernel kills everything it left
behind, fork bombs included. Output goes through FIFOs to readers that keep ``cap + 1`` bytes
and drain the rest, so a chatty job is neither blocked nor able to fill the guest's memory.

Protocol (host <- guest), every line starting with the per-VM nonce: ``N READY`` (warm only),
``N BEGIN stdout SIZE`` + base64 lines + ``N END``, the same for stderr, ``N EXIT CODE
TIMED_OUT`` and ``N DONE``; ``N FAIL reason`` if the init itself fails.
"""

from __future__ import annotations

USER = "sandbox"
UID = 1000
GID = 1000
MODULES = ("virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console")
CHANNEL = "/dev/hvc0"

# Guest paths. /agentgw is traversable but not listable; the nonce inside is root-only, so the
# job cannot forge frames (it cannot write to the channel either: its output goes to FIFOs).
CONTROL = "agentgw"
NONCE = f"{CONTROL}/nonce"
JOB_DIR = f"{CONTROL}/job"
JOB_CMD = f"{JOB_DIR}/cmd"
JOB_STDIN = f"{JOB_DIR}/stdin"
JOB_LIMITS = f"{JOB_DIR}/limits"
RUN_JOB = f"{CONTROL}/run-job"
WORK = "work"

PASSWD = f"root:x:0:0:root:/root:/bin/sh\n{USER}:x:{UID}:{GID}:{USER}:/{WORK}:/bin/sh\n"
GROUP = f"root:x:0:\n{USER}:x:{GID}:\n"

INIT = f"""\
#!/bin/sh
# agentgw sandbox init (PID 1); agentgw/sandbox/guest.py explains it. Under TCG every process
# costs milliseconds, so the warm path after READY starts as few as it can.
[ "$AGENTGW_NNP" = 1 ] || AGENTGW_NNP=1 exec /bin/setpriv --nnp /bin/sh /init
unset AGENTGW_NNP
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
chmod 0755 /
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {" ".join(MODULES)}; do insmod /lib/modules/$m.ko; done
ip link set lo up
i=0
while [ ! -c {CHANNEL} ]; do
    i=$((i + 1))
    [ $i -gt 500 ] && {{ echo "agentgw: no {CHANNEL}"; reboot -f; }}
    sleep 0.01
done
exec < {CHANNEL} > {CHANNEL} 2>&1
# Raw and silent: job bytes arrive as sent, nothing is echoed back, no CR is added.
stty raw -echo
A=/{CONTROL}
R=$A/run
N=$(cat $A/nonce)
fail() {{
    echo "$N FAIL $*"
    stty -echo
    reboot -f
}}
mkdir -m 0700 $R
mkfifo -m 0600 $R/stdout.fifo $R/stderr.fifo || fail mkfifo
# Readers start now and block opening their FIFO until the job is known; each keeps OUTCAP + 1
# bytes (one more than is sent: that is how truncation shows) and drains the rest, if any.
for s in stdout stderr; do
    (. /{JOB_LIMITS}; head -c $((OUTCAP + 1)) > $R/$s; read -r -n 1 _ && exec cat > /dev/null) \
        < $R/$s.fifo &
done
if [ ! -e /{JOB_CMD} ]; then
    echo "$N READY"
    read -r word len
    [ "$word" = JOB ] || fail "expected JOB, got $word"
    # cpio as root keeps the archive's owners, so /{WORK} is the user's without a chown.
    head -c "$len" | cpio -i -d -u 2> /dev/null || fail "bad job archive"
fi
. /{JOB_LIMITS}
exec 3> $R/stdout.fifo 4> $R/stderr.fifo
unshare -p -f sh /{RUN_JOB} "$TIMEOUT" "$NPROC"
rc=$?
exec 3>&- 4>&-
wait
timed=0
[ -e $R/timed_out ] && timed=1
for s in stdout stderr; do
    size=0
    [ -s $R/$s ] && size=$(wc -c < $R/$s)
    echo "$N BEGIN $s $size"
    if [ "$size" -gt "$OUTCAP" ]; then
        head -c "$OUTCAP" $R/$s | base64
    elif [ "$size" -gt 0 ]; then
        base64 $R/$s
    fi
    echo "$N END"
done
echo "$N EXIT $rc $timed"
echo "$N DONE"
# stty sets the line with TCSADRAIN: it returns once everything above has been sent.
stty -echo
reboot -f
"""

# PID 1 of the job's PID namespace (root, until su drops to the user). Its exit status is the
# job's; when it exits the kernel kills every process left in the namespace.
RUN_JOB_SCRIPT = f"""\
#!/bin/sh
ulimit -u "$2"
su -s /bin/sh {USER} /{JOB_CMD} < /{JOB_STDIN} >&3 2>&4 3>&- 4>&- &
job=$!
(sleep "$1"; : > /{CONTROL}/run/timed_out; kill -KILL $job) < /dev/null > /dev/null 2>&1 3>&- 4>&- &
wait $job
"""
