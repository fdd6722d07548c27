# Shared by the installer's and the OS's /init (busybox sh): mounts the
# kernel file systems and loads the modules the Debian kernel keeps out of
# its image. Debian builds the virtio PCI transport, virtio-net,
# virtio-blk and vfat as modules, so without them there is neither eth0
# nor a disk. The build resolved their dependencies (modprobe
# --show-depends) into /lib/modules/load-order.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /mnt

load_modules() {
	for m in $(cat /lib/modules/load-order); do
		insmod "/lib/modules/$m" 2>/dev/null || say "insmod $m failed"
	done
}

# wait_for PATH SECONDS: wait until PATH exists (devices appear a moment
# after their driver loads).
wait_for() {
	i=0
	while [ ! -e "$1" ] && [ "$i" -lt $(($2 * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "$1" ]
}

# cmdline NAME: the value of NAME=... on the kernel command line.
cmdline() {
	for a in $(cat /proc/cmdline); do
		case "$a" in "$1"=*) echo "${a#*=}" ;; esac
	done
}

# Nothing to do any more: stay up (a machine, not a process that exits:
# /init returning would panic the kernel).
idle() {
	while :; do sleep 3600; done
}
