#!/bin/sh
# mmdebstrap's --customize-hook for the test OS's root file system: run on
# the build machine, as root, with the root directory as $1, after the
# packages are installed. It makes the root what Flatcar's is to Ignition
# (a user core, uid 500; networkd; presets applied on the first boot) and
# removes what a test OS never reads, since every VM test writes the image
# over HTTP under TCG. $2 is mayu-os-console.service.
set -eu
root=$1
cd "$root"

# The console report of the test OS (mayu-os-console.service says why).
cp "$2" etc/systemd/system/mayu-os-console.service
mkdir -p usr/lib/mayu-os
cat >usr/lib/mayu-os/console-status <<'STATUS'
#!/bin/sh
addrs=$(ip -4 -o addr show scope global | while read -r _ dev _ a _; do printf '%s:%s ' "$dev" "$a"; done)
echo "MAYU-OS: up: hostname=$(cat /etc/hostname) addresses=${addrs% }"
STATUS
chmod 755 usr/lib/mayu-os/console-status

# The user Ignition adds SSH keys to: as on Flatcar, it exists before
# Ignition runs (Ignition then only runs `usermod core`).
chroot "$root" groupadd -g 500 core
chroot "$root" useradd -K UID_MIN=500 -u 500 -g 500 -m -d /home/core -s /bin/bash core

# The network comes up by the .network file Ignition writes; the units that
# wait for it (After=network-online.target) wait for networkd.
chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service \
	mayu-os-console.service

# Housekeeping a test OS that lives for minutes never needs, and that
# costs seconds of every boot under TCG.
chroot "$root" systemctl mask e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
	apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer

# /etc/machine-id: OSRoot writes it after mmdebstrap, whose own clean-up
# empties it after this hook.
rm -f var/lib/dbus/machine-id
echo localhost >etc/hostname

# Ignition's files stage relabels what it wrote when the root has an
# SELinux configuration, and fails when it has none; this one says SELinux
# is off (the initramfs's setfiles is a no-op).
mkdir -p etc/selinux
printf 'SELINUX=disabled\nSELINUXTYPE=targeted\n' >etc/selinux/config

# The initramfs mounts the root read-write before it switches to it.
echo 'LABEL=MAYU-ROOT / ext4 rw,noatime 0 0' >etc/fstab
# The journal in memory: nothing of a test boot needs keeping, and every
# write costs under TCG.
mkdir -p etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' >etc/systemd/journald.conf.d/volatile.conf

# What nothing reads in a test OS.
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* \
	usr/share/lintian usr/share/common-licenses usr/share/zoneinfo/right \
	usr/lib/udev/hwdb.bin usr/lib/udev/hwdb.d \
	var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/cache/ldconfig/* \
	var/log/* usr/lib/x86_64-linux-gnu/gconv/[A-Z]*
