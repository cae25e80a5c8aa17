#!/bin/bash
# Boot the realistic guest under QEMU (TCG unless /dev/kvm), send it console
# commands one by one, wait for each to finish, and power it off.
#
#   scripts/guest-realistic/run.sh [options] IMAGE [COMMAND...]
#     --timeout S   hard limit for the whole QEMU run (default 900)
#     --mem M       guest RAM in MiB (default 512)
#     --media IMG   attach IMG as a second virtio disk (/dev/vdb, read-only)
#     --log FILE    serial console log (default: IMAGE.console.log)
#     --keep        do not power off at the end (QEMU is killed instead)
#     --accel A     tcg or kvm (default: kvm if /dev/kvm is writable)
# COMMANDs are console lines (see README.md): run, "run N", "sh CMD", sync;
# and "save FILE", done by the host: the VM state saved to FILE as isr
# suspends (QMP stop + migrate, qmp-save.py), then the guest goes on.
# "poweroff" is sent at the end unless --keep. IMAGE is modified: boot a copy.
# Prints ISR-WORKLOAD-DONE lines and "boot-seconds=S" to stdout; exit 1 on
# timeout or error.
set -euo pipefail
TIMEOUT=900 MEM=512 MEDIA= LOG= KEEP=0 ACCEL=
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) TIMEOUT=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --media) MEDIA=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --accel) ACCEL=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
IMAGE=${1:?usage: run.sh [options] IMAGE [COMMAND...]}; shift
LOG=${LOG:-$IMAGE.console.log}
[ -n "$ACCEL" ] || { ACCEL=tcg; [ -w /dev/kvm ] && ACCEL=kvm; }
FIFO=$(mktemp -d /tmp/isr-realistic-run.XXXXXX)
mkfifo "$FIFO/serial.in" "$FIFO/serial.out"
QPID=
cleanup() {
    [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
    [ -z "${CATPID:-}" ] || kill "$CATPID" 2>/dev/null || true
    rm -rf "$FIFO"
}
trap cleanup EXIT
: >"$LOG"
cat "$FIFO/serial.out" >>"$LOG" &
CATPID=$!
args=(-machine pc -accel "$ACCEL" -m "$MEM" -smp 1 -nodefaults -display none -no-reboot
    -serial "pipe:$FIFO/serial" -qmp "unix:$FIFO/qmp.sock,server=on,wait=off" -drive "file=$IMAGE,format=raw,if=virtio,cache=unsafe")
[ -z "$MEDIA" ] || args+=(-drive "file=$MEDIA,format=raw,if=virtio,readonly=on")
T0=$(date +%s.%N)
deadline=$(( $(date +%s) + TIMEOUT ))
start_qemu() {
    timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 "${args[@]}" 2>"$LOG.qemu-stderr" &
    QPID=$!
    exec 3>"$FIFO/serial.in"
}
start_qemu

# wait_for REGEX COUNT: until COUNT lines match, QEMU exits or the deadline.
wait_for() {
    while [ "$(grep -acE "$1" "$LOG" || true)" -lt "$2" ]; do
        kill -0 "$QPID" 2>/dev/null || { echo "run.sh: QEMU exited while waiting for '$1'" >&2; tail -n 20 "$LOG" >&2; return 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { echo "run.sh: timeout waiting for '$1'" >&2; tail -n 20 "$LOG" >&2; return 1; }
        grep -aq 'ISR-ERROR\|Kernel panic' "$LOG" && { echo "run.sh: guest error" >&2; tail -n 20 "$LOG" >&2; return 1; }
        sleep 0.3
    done
}
# Under TCG on an overloaded host the kernel's early timer check can fail
# ("IO-APIC + timer doesn't work!" panic) before anything touches the disk:
# boot again, up to 3 attempts.
for attempt in 1 2 3; do
    if wait_for '^ISR-READY' 1 2>"$FIFO/boot-err"; then break; fi
    if [ "$attempt" -lt 3 ] && grep -aq 'IO-APIC + timer' "$LOG" && ! grep -aq '^ISR-READY' "$LOG"; then
        echo "run.sh: early timer panic (host overloaded), booting again" >&2
        kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true
        cp "$LOG" "$LOG.failed-boot-$attempt"; : >"$LOG"   # the reader appends (O_APPEND): truncating is safe
        start_qemu
        continue
    fi
    cat "$FIFO/boot-err" >&2; exit 1
done
echo "boot-seconds=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}")"
done_runs=0 done_sh=0
for cmd in "$@"; do
    [[ "$cmd" == "save "* ]] || printf '%s\n' "$cmd" >&3
    case "$cmd" in
        run) done_runs=$((done_runs + 1)); wait_for '^ISR-WORKLOAD-DONE' "$done_runs" ;;
        "run "*) done_runs=$((done_runs + ${cmd#run })); wait_for '^ISR-WORKLOAD-DONE' "$done_runs" ;;
        "sh "*) done_sh=$((done_sh + 1)); wait_for '^ISR-SH-DONE' "$done_sh" ;;
        sync) wait_for '^ISR-SYNCED' 1 ;;
        "save "*) python3 "$(dirname "${BASH_SOURCE[0]}")/qmp-save.py" --timeout $((deadline - $(date +%s))) "$FIFO/qmp.sock" "${cmd#save }" ;;
    esac
done
grep -a '^ISR-WORKLOAD-DONE\|^ISR-SH-DONE' "$LOG" | tr -d '\r' || true
if [ "$KEEP" -eq 0 ]; then
    printf 'poweroff\n' >&3
    for _ in $(seq 1 120); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
fi
if kill -0 "$QPID" 2>/dev/null; then
    [ "$KEEP" -eq 1 ] || echo "run.sh: guest did not power off; killing QEMU" >&2
    kill "$QPID"; wait "$QPID" 2>/dev/null || true
    [ "$KEEP" -eq 1 ] || exit 1
else
    wait "$QPID" || true
fi
QPID=
echo "total-seconds=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}")"
