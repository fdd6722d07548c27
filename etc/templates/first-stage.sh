#!/bin/sh
# mayu first-stage script for the machine in ID below, rendered by mayu.
# The installer OS runs it: it waits for mayu, writes the OS image to the
# install disk, puts the final config on the disk, announces `installed`
# and reboots. Every call to mayu is retried, so a replica dying mid-install
# costs a retry, not the install.
#
# It needs only a POSIX sh and either curl or wget (busybox's will do),
# sha256sum, mkfifo, tee, cut, mount, sync and reboot; partprobe or
# blockdev where the installer has them. It computes the SHA-256 of the OS
# image as it writes it, tries the next replica when it is not the digest
# mayu rendered in (IMAGE_SHA256), and reports `failed` when no replica
# gives the right bytes: a corrupt image is never announced.
#
# Template variables it reads (cluster.template_vars):
#   config_partition  the partition that receives the final config as
#                     mayu/final-config, where the installed OS reads it (the
#                     test OS's initramfs hands it to Ignition on the first
#                     boot). Default: the install disk's first partition
#   image_decompress  bzip2, gzip or xz: the image is served compressed
#                     (Flatcar publishes flatcar_production_image.bin.bz2)
#                     and is decompressed onto the disk; the digest checked
#                     is the compressed file's, as the catalogue has it.
#                     Default: none, the image is written as served.
#   mayu_urls         the base URLs of all replicas, space-separated, e.g.
#                     "http://10.0.3.2:4081 http://10.0.3.3:4081"; after a
#                     failed call this and every later call go to the next
#                     one. Not needed when the replicas share a virtual
#                     address (contrib/keepalived).
# Every value mayu puts in goes through `shell`, which single-quotes it.
set -u

MAYU={{shell .MayuURL}}
DISK={{shell .Install.Disk}}
ID={{shell .Machine.ID}}
# The SHA-256 of the OS image mayu serves (of the file, or the artifact).
IMAGE_SHA256={{shell .Image.SHA256}}
# The partition of the installed disk that receives the final config.
CONFIG_PART={{with index .Vars "config_partition"}}{{shell .}}{{else}}"${DISK}1"{{end}}
# How the image is unpacked onto the disk (image_decompress).
UNPACK={{with index .Vars "image_decompress"}}{{shell .}}{{else}}""{{end}}
# Where to go when the replica that rendered this script fails.
MAYU_URLS={{with index .Vars "mayu_urls"}}{{shell .}}{{else}}"$MAYU"{{end}}

log() { echo "mayu-install[$ID]: $*"; }

# Calls go to BASE: the replica that rendered this script, until a call
# fails; then to the next of MAYU_URLS, and they stay there.
BASE=$MAYU
NURLS=$(echo $MAYU_URLS | wc -w)

# next_base: BASE becomes the replica after it in MAYU_URLS (the first
# when BASE is not in the list).
next_base() {
	first="" next="" found=""
	for u in $MAYU_URLS; do
		u=${u%/}
		[ -n "$first" ] || first=$u
		[ -n "$found" ] && { next=$u; break; }
		[ "$u" = "$BASE" ] && found=1
	done
	BASE=${next:-$first}
}

# at URL: URL on the current replica.
at() {
	case "$1" in
	"$MAYU"/*) echo "$BASE${1#"$MAYU"}" ;;
	*) echo "$1" ;;
	esac
}

# retry fetch|post URL [ARG]: tried on each replica in turn, a round of
# all of them every 5 s, for 5 minutes.
retry() {
	op=$1 url=$2
	shift 2
	n=0
	until $op "$(at "$url")" "$@"; do
		n=$((n + 1))
		[ "$n" -ge $((60 * NURLS)) ] && return 1
		next_base
		u=$(at "$url")
		log "retry $n: $op ${u%%\?*}"
		if [ $((n % NURLS)) -eq 0 ]; then
			sleep 5
		fi
	done
	return 0 # (an until loop's status is its body's last command's)
}

# wget's stall timeout, where it has one: Debian 12's busybox wget is
# built without -T and crashes (SIGSEGV) when given it, even on success.
WGET_T=""
wget --help 2>&1 | grep -q -e '-T SEC' -e '-T,' && WGET_T="-T 30"

# fetch URL FILE. A stalled transfer (the replica behind the virtual
# address died mid-download) fails after 30 s and is retried, rather than
# waiting for TCP to give up.
fetch() {
	if command -v curl >/dev/null 2>&1; then
		# -L: a replica that lacks an artifact sends the machine to a peer
		# that holds it (307).
		curl -fsSL --max-redirs 3 --connect-timeout 10 --speed-limit 1 --speed-time 30 -o "$2" "$1"
	else
		# shellcheck disable=SC2086 # WGET_T is empty or two words
		wget -q $WGET_T -O "$2" "$1"
	fi
}

# post URL [BODY]
post() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --connect-timeout 10 --max-time 30 -X POST --data-binary "${2:-}" "$1" >/dev/null
	else
		# shellcheck disable=SC2086
		wget -q $WGET_T -O /dev/null --post-data="${2:-}" "$1"
	fi
}

# write_image URL: one attempt at streaming the image to $DISK, its
# SHA-256 computed on the way. The bytes go through a fifo: tee copies
# them to sha256sum (reading the fifo) and on to the disk, unpacked there
# when image_decompress says so. Each stage records its own status, since
# a pipeline's is its last command's: a disk that refused a write, or a
# download cut short, fails the attempt; so do bytes of another digest
# (a replica's copy gone bad), and the next attempt goes to the next
# replica. $IMAGE_ERR says why the last attempt failed.
IMAGE_FIFO=/tmp/mayu-image.fifo
IMAGE_SUM=/tmp/mayu-image.sha256
IMAGE_RC=/tmp/mayu-image.rc
IMAGE_ERR=/tmp/mayu-image.err
write_image() {
	rm -f "$IMAGE_FIFO" "$IMAGE_SUM" "$IMAGE_RC"
	mkfifo "$IMAGE_FIFO" || return 1
	sha256sum <"$IMAGE_FIFO" >"$IMAGE_SUM" &
	{
		fetch "$1" -
		echo "download $?" >>"$IMAGE_RC"
	} | {
		tee "$IMAGE_FIFO"
		echo "tee $?" >>"$IMAGE_RC"
	} | {
		# shellcheck disable=SC2086 # UNPACK_CMD is one to three words
		$UNPACK_CMD >"$DISK"
		echo "write $?" >>"$IMAGE_RC"
	}
	wait
	rm -f "$IMAGE_FIFO"
	# The whole download went through the hash: judge its digest first,
	# also when unpacking failed (a corrupt compressed image breaks the
	# decompressor, and is a mismatch, not a disk error).
	if grep -qx 'download 0' "$IMAGE_RC" 2>/dev/null && grep -qx 'tee 0' "$IMAGE_RC"; then
		got=$(cut -d ' ' -f 1 "$IMAGE_SUM")
		if [ "$got" != "$IMAGE_SHA256" ]; then
			echo "image sha256 mismatch: got $got want $IMAGE_SHA256" >"$IMAGE_ERR"
			log "$(cat "$IMAGE_ERR") from ${BASE}"
			mismatch_from "$BASE"
			return 1
		fi
	fi
	bad=$(grep -v ' 0$' "$IMAGE_RC" 2>/dev/null)
	if [ -n "$bad" ] || [ "$(wc -l <"$IMAGE_RC")" -ne 3 ]; then
		echo "cannot write the OS image to $DISK ($(echo $bad))" >"$IMAGE_ERR"
		return 1
	fi
	return 0
}

# mismatch_from BASE: BASE served other bytes than the image's digest.
# That is no passing failure: once every replica of MAYU_URLS has, the
# install fails; until then the others are tried.
WRONG_BYTES=" "
mismatch_from() {
	case "$WRONG_BYTES" in *" $1 "*) ;; *) WRONG_BYTES="$WRONG_BYTES$1 " ;; esac
	for u in $MAYU_URLS; do
		case "$WRONG_BYTES" in *" ${u%/} "*) ;; *) return 0 ;; esac
	done
	fail "$(cat "$IMAGE_ERR")"
}

fail() {
	log "FAILED: $*"
	retry post {{shell .URLs.Failed}} "$*" || true
	exit 1
}

log "waiting for $MAYU"
retry fetch "$MAYU/boot.ipxe" /dev/null || fail "mayu unreachable at $MAYU"

[ -n "$IMAGE_SHA256" ] || fail "mayu rendered no image digest to check the image against"
command -v sha256sum >/dev/null 2>&1 || fail "the installer has no sha256sum to check the image with"
[ -e "$DISK" ] || fail "the install disk $DISK does not exist"
case "$UNPACK" in
"") UNPACK_CMD=cat ;;
bzip2 | gzip | xz) UNPACK_CMD="$UNPACK -dc" ;;
*) fail "template variable image_decompress is $UNPACK: give bzip2, gzip or xz" ;;
esac
command -v "${UNPACK_CMD%% *}" >/dev/null 2>&1 || fail "the installer has no ${UNPACK_CMD%% *} to unpack the image with"
log "writing the OS image to $DISK (sha256 $IMAGE_SHA256)"
echo "no attempt made" >"$IMAGE_ERR"
retry write_image {{shell .URLs.Image}} || fail "$(cat "$IMAGE_ERR")"
sync
log "the image on $DISK has sha256 $IMAGE_SHA256, as it should"

log "fetching the final config"
retry fetch {{shell .URLs.FinalConfig}} /tmp/mayu-final-config || fail "cannot fetch the final config"

log "putting the final config on $CONFIG_PART"
# The kernel reads a disk's partition table when the disk appears, not
# when it is overwritten: ask it to read the new one, then give the
# partition's device node a moment to appear.
if command -v partprobe >/dev/null 2>&1; then
	partprobe "$DISK" 2>/dev/null
else
	blockdev --rereadpt "$DISK" 2>/dev/null
fi
n=0
while [ ! -b "$CONFIG_PART" ] && [ "$n" -lt 50 ]; do
	sleep 0.2
	n=$((n + 1))
done
mkdir -p /mnt/mayu-root
if mount "$CONFIG_PART" /mnt/mayu-root; then
	mkdir -p /mnt/mayu-root/mayu
	cp /tmp/mayu-final-config /mnt/mayu-root/mayu/final-config
	umount /mnt/mayu-root
else
	fail "cannot mount $CONFIG_PART to place the final config"
fi
sync

log "announcing installed"
retry post {{shell .URLs.Installed}} || fail "cannot announce installed"

log "done, rebooting into the installed system"
reboot -f
