#!/bin/sh
# mayu first-stage script for machine {{.Machine.ID}}, rendered by mayu.
# The installer OS runs it: it waits for mayu, writes the OS image to the
# install disk, puts the final config on the disk, announces `installed`
# and reboots. Every call to mayu is retried, so a replica dying mid-install
# costs a retry, not the install.
set -u

MAYU={{shellquote .MayuURL}}
DISK={{shellquote .Install.Disk}}
ID={{shellquote .Machine.ID}}
# The partition of the installed disk that receives the final config.
CONFIG_PART={{with index .Vars "config_partition"}}{{shellquote .}}{{else}}"${DISK}1"{{end}}

log() { echo "mayu-install[$ID]: $*"; }

# retry CMD...: up to 60 tries, 5 s apart.
retry() {
	n=0
	until "$@"; do
		n=$((n + 1))
		[ "$n" -ge 60 ] && return 1
		log "retry $n: $1 ${2:-}"
		sleep 5
	done
}

# fetch URL FILE. A stalled transfer (the replica behind the virtual
# address died mid-download) fails after 30 s and is retried, rather than
# waiting for TCP to give up.
fetch() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --connect-timeout 10 --speed-limit 1 --speed-time 30 -o "$2" "$1"
	else
		wget -q -T 30 -O "$2" "$1"
	fi
}

# post URL [BODY]
post() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --connect-timeout 10 --max-time 30 -X POST --data-binary "${2:-}" "$1" >/dev/null
	else
		wget -q -T 30 -O /dev/null --post-data="${2:-}" "$1"
	fi
}

fail() {
	log "FAILED: $*"
	retry post {{shellquote .URLs.Failed}} "$*" || true
	exit 1
}

log "waiting for $MAYU"
retry fetch "$MAYU/boot.ipxe" /dev/null || fail "mayu unreachable at $MAYU"

log "writing the OS image to $DISK"
retry fetch {{shellquote .URLs.Image}} "$DISK" || fail "cannot write the OS image to $DISK"
sync

log "fetching the final config"
retry fetch {{shellquote .URLs.FinalConfig}} /tmp/mayu-final-config || fail "cannot fetch the final config"

log "putting the final config on $CONFIG_PART"
command -v partprobe >/dev/null 2>&1 && partprobe "$DISK" 2>/dev/null
mkdir -p /mnt/mayu-root
if mount "$CONFIG_PART" /mnt/mayu-root; then
	mkdir -p /mnt/mayu-root/mayu
	cp /tmp/mayu-final-config /mnt/mayu-root/mayu/final-config.yaml
	umount /mnt/mayu-root
else
	fail "cannot mount $CONFIG_PART to place the final config"
fi
sync

log "announcing installed"
retry post {{shellquote .URLs.Installed}} || fail "cannot announce installed"

log "done, rebooting into the installed system"
reboot -f
