#!/bin/sh
# The chassis of one lab machine: ipmi_sim's chassis_control program (one
# ipmi_sim per machine, tests/e2e/conftest.py), so an IPMI power command to the
# machine's BMC really starts, stops or resets its QEMU process.
#
#   chassis.sh VMDIR get power boot       prints power:1|0 (whether its QEMU runs), boot:pxe|default|none
#   chassis.sh VMDIR set power 1          power on: start QEMU (nothing if it runs)
#   chassis.sh VMDIR set power 0          power off: stop QEMU (SIGTERM, then SIGKILL)
#   chassis.sh VMDIR set reset 1          reset: a running machine is stopped and started again (a new
#                                         boot); a machine that is off stays off, as on a real chassis
#   chassis.sh VMDIR set boot pxe|default|none
#                                         the boot device for the next power-ons (ipmi_sim's words;
#                                         "default" is what it says for disk)
#   chassis.sh VMDIR button on|off        the machine's own power button: what a test presses
#                                         when no BMC is involved (recorded, but not as a "set")
#
# The boot device decides the firmware's boot order (QEMU bootindex): pxe, or
# none (no override: the machine's own order, as racked for provisioning),
# boot the network first and then the disk; default (disk) boots the disk
# first, and only if it holds no boot sector goes on to the network, as a
# real BIOS does. An installed disk has a boot sector (installer/bootsector.py),
# so a machine whose BMC says disk boots it and never asks for PXE. The
# override is kept until the BMC is told otherwise (ipmi_sim keeps its boot
# flags; the "next boot only" expiry of real BMCs is not modelled: provisiond
# sets the disk itself when the install is done).
#
# QEMU runs with -no-reboot: a guest reboot or power-off ends the process,
# which the BMC then reports as power off, like a machine that switched off.
#
# VMDIR holds what the fixture wrote: qemu.sh (the machine's QEMU command,
# taking SERIAL_LOG, NET_BOOTINDEX and DISK_BOOTINDEX from the environment)
# and its disk; and what this program keeps: qemu.pid, boots (power-ons so
# far), serial-N.log and qemu-N.log for power-on N, bmc/machine/boot and
# bmc/machine/calls.log (every call, timestamped, as tests/power/ipmisim.py
# records them).
vm=${1:?usage: chassis.sh VMDIR get|set|button ...}
verb=$2
shift 2
state=$vm/bmc/machine
mkdir -p "$state"
echo "$(date +%s.%N) $verb $*" >> "$state/calls.log"

# running: whether this machine's QEMU is alive (sets $pid). A zombie is not,
# and a recycled pid is not this machine's unless its command line names VMDIR.
running() {
  pid=$(cat "$vm/qemu.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  case "${stat##*) }" in Z*|X*) return 1 ;; esac
  cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  # Empty while the process is inside execve (sh becoming QEMU): still ours.
  [ -z "$cmdline" ] || case "$cmdline" in *"$vm/"*) ;; *) return 1 ;; esac
}

start() {
  running && return 0
  boots=$(( $(cat "$vm/boots" 2>/dev/null || echo 0) + 1 ))
  case "$(cat "$state/boot" 2>/dev/null)" in
    default) net=2 disk=1 ;;
    *) net=1 disk=2 ;;
  esac
  # In the background (qemu.sh execs QEMU, so $! is QEMU's pid), detached
  # from ipmi_sim's pipe; in the caller's process group, so a Ctrl-C or
  # timeout(1) that ends the tests ends the machines too.
  SERIAL_LOG=$vm/serial-$boots.log NET_BOOTINDEX=$net DISK_BOOTINDEX=$disk \
    sh "$vm/qemu.sh" < /dev/null > "$vm/qemu-$boots.log" 2>&1 &
  echo $! > "$vm/qemu.pid.new" && mv "$vm/qemu.pid.new" "$vm/qemu.pid"
  # Counted only now: a test that sees boot N also finds its QEMU's pid.
  echo "$boots" > "$vm/boots.new" && mv "$vm/boots.new" "$vm/boots"
  # Return once sh has become QEMU (or died: its log says why), so that
  # "on" means QEMU runs.
  qemu=$!
  for _ in $(seq 1 100); do
    stat=$(cat "/proc/$qemu/stat" 2>/dev/null) || break
    case "${stat##*) }" in Z*|X*) break ;; esac
    case "$(tr '\0' ' ' < "/proc/$qemu/cmdline" 2>/dev/null)" in qemu-system*) break ;; esac
    sleep 0.05
  done
}

stop() {
  running || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do running || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  for _ in $(seq 1 50); do running || return 0; sleep 0.1; done
  echo "QEMU ($pid) does not stop"
  return 1
}

if [ "$verb" = get ]; then
  for name in "$@"; do
    case "$name" in
      power) if running; then echo "power:1"; else echo "power:0"; fi ;;
      boot) echo "boot:$(cat "$state/boot" 2>/dev/null || echo none)" ;;
    esac
  done
  exit 0
fi
if [ "$verb" = button ]; then  # the machine's own power button (the test's, not the BMC's)
  case "$1" in
    on) start ;;
    off) stop ;;
    *) echo "usage: chassis.sh VMDIR button on|off"; exit 2 ;;
  esac
  exit
fi
[ "$verb" = set ] || { echo "usage: chassis.sh VMDIR get|set|button ..."; exit 2; }
while [ $# -ge 2 ]; do
  case "$1" in
    power) if [ "$2" = 1 ]; then start; else stop; fi || exit 1 ;;
    reset) if running; then stop && start || exit 1; fi ;;
    boot) echo "$2" > "$state/boot.new" && mv "$state/boot.new" "$state/boot" ;;
    *) echo "chassis.sh: no such setting: $1"; exit 1 ;;
  esac
  shift 2
done
exit 0
