#!/bin/bash
# mayu demo: a real virtual machine network-boots through mayu, gets its OS
# installed, reboots into it and reports in; then a reinstall.
#
#   1. builds the installer (Debian kernel + busybox initramfs) and a small
#      OS image that boots on BIOS and UEFI (bin/vmlab, internal/vmlab);
#   2. creates a lab network in namespaces: a bridge with a tap for the VM
#      and the replicas' hosts (nothing touches the machine's interfaces);
#   3. starts mayu on its embedded etcd, or with REPLICAS=3 three replicas
#      on a 3-member etcd (bin/etcd);
#   4. boots a qemu VM (SeaBIOS; FW=uefi for OVMF), network first and disk
#      second, and prints each step of the flow as it happens, from the
#      VM's serial console and mayu's log;
#   5. shows the machine with mayuctl and etcdctl, reinstalls it, and
#      removes everything it made, also when interrupted.
#
# Usage (as root): make demo   or   REPLICAS=3 FW=uefi scripts/demo.sh
# Needs bin/mayu, bin/mayuctl, bin/etcd, bin/etcdctl, bin/vmlab (make demo
# builds them) and the packages scripts/install-deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bin=$top/bin
REPLICAS=${REPLICAS:-1}
FW=${FW:-bios}
case "$REPLICAS" in 1 | 3) ;; *) echo "REPLICAS must be 1 or 3" >&2; exit 2 ;; esac
case "$FW" in bios | uefi) ;; *) echo "FW must be bios or uefi" >&2; exit 2 ;; esac

id=$$
pfx=mayu-demo-$id
sw=$pfx-sw # the switch: bridge br0 and the VM's tap
work=$(mktemp -d /tmp/mayu-demo.XXXXXX)
namespaces=()
pids=() # everything started here, stopped by pid at the end
mayu_pids=()
serial=DEMO-SN-0001
machine=demo-sn-0001 # the id mayu derives from the SMBIOS serial
mac=52:54:00:12:34:56

cleanup() {
	set +e
	trap - INT TERM
	exec 2>/dev/null # no "Killed" notices from bash for what is stopped here
	# Processes first (the VM, mayu, etcd, dnsmasq), newest first, each
	# by the pid it was started with; then whatever is left in our
	# namespaces, then the namespaces.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "${namespaces[@]}"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up" >&2; exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
show() { sed 's/^/    /'; }
die() {
	printf '\n\033[1mdemo failed: %s\033[0m\n' "$*" >&2
	[ -f "$work/vm/serial.log" ] && { echo "VM console (last 25 lines):"; tail -n 25 "$work/vm/serial.log" | show; } >&2
	[ -f "$work/mayu.log" ] && { echo "mayu log (last 25 lines):"; tail -n 25 "$work/mayu.log" | show; } >&2
	exit 1
}

# await FILE REGEX [TIMEOUT]: wait for the next line of FILE matching
# REGEX, after the line the previous await on FILE matched (the flow is
# read in order), and print it. mayu's log lines lose their time= and
# level= fields; the VM's lines keep qemu's clock.
declare -A seen
await() {
	local file=$1 re=$2 timeout=${3:-120} start=$SECONDS n hit
	while :; do
		n=${seen[$file]:-0}
		if hit=$(tail -n +$((n + 1)) "$file" 2>/dev/null | grep -n -m1 -E -- "$re"); then
			seen[$file]=$((n + ${hit%%:*}))
			printf '%s\n' "${hit#*:}" | sed -E 's/time=[^ ]+ level=[A-Z]+ //; s/ (mac|remote)=[^ ]+//g' | show
			return 0
		fi
		((SECONDS - start < timeout)) || die "nothing matched /$re/ in $(basename "$file") within ${timeout}s"
		# (after a pause: on Ctrl-C the VM stops too, and the INT trap
		# should have its say first)
		kill -0 "$vm_pid" 2>/dev/null || { sleep 1; die "the VM stopped"; }
		sleep 0.2
	done
}
console() { await "$work/vm/serial.log" "$@"; }
mayulog() { await "$work/mayu.log" "$@"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, tap devices)" >&2; exit 1; }
for b in mayu mayuctl etcd etcdctl vmlab; do
	[ -x "$bin/$b" ] || { echo "$bin/$b is missing: run make demo" >&2; exit 1; }
done

step "building the installer and the OS image from Debian packages (kernel cached in .work/vmlab)"
files=$work/files boot=$work/boot
"$bin/vmlab" build -out "$files" -cache "${MAYU_VMLAB_CACHE:-$top/.work/vmlab}" | show
mkdir -p "$files/templates" "$boot"
cp etc/templates/first-stage.sh etc/templates/final-config.yaml "$files/templates/"
# Debian's iPXE builds, as files (Debian's ipxe.efi is a symlink into /boot).
cp -L /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "$boot/"
head -c 24 /dev/urandom | base64 >"$work/admin-token"
chmod 600 "$work/admin-token"

if [ "$REPLICAS" = 1 ]; then addrs=(10.99.0.1); else addrs=(10.99.0.2 10.99.0.3 10.99.0.4); fi
hosts=()
step "a lab network: namespace $sw (bridge br0, tap0 for the VM) and ${#addrs[@]} replica host(s)"
ip netns add "$sw"
namespaces+=("$sw")
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$sw" link set br0 up
ip -n "$sw" tuntap add dev tap0 mode tap
ip -n "$sw" link set tap0 master br0 up
for i in "${!addrs[@]}"; do
	ns=$pfx-r$((i + 1))
	ip netns add "$ns"
	namespaces+=("$ns")
	hosts+=("$ns")
	ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$ns"
	ip -n "$sw" link set "p$i" master br0 up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "${addrs[i]}/24" dev eth0
	ip -n "$ns" link set eth0 up
	note "$ns: eth0 ${addrs[i]}/24"
done
# IPv6 router advertisements only (dnsmasq: no DNS, no DHCP): without a
# router on the segment iPXE waits ~13 s for one on every network boot.
ip -n "${hosts[0]}" addr add fd99::1/64 dev eth0 nodad
ip netns exec "${hosts[0]}" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface=eth0 \
	--bind-interfaces --user=root --group=root --enable-ra --dhcp-range=fd99::,ra-only,64 \
	--pid-file="$work/ra.pid" --dhcp-leasefile="$work/ra.leases" --log-facility=- >"$work/ra.log" 2>&1 &
pids+=($!)
note "${hosts[0]}: IPv6 router advertisements for fd99::/64 (dnsmasq, RA only)"

etcd_yaml="endpoints: []"
urls=""
if [ "$REPLICAS" = 3 ]; then
	step "a 3-member etcd cluster, one member on each replica host (bin/etcd)"
	cluster="" endpoints=""
	for i in 0 1 2; do
		cluster="$cluster${cluster:+,}e$((i + 1))=http://${addrs[i]}:2380"
		endpoints="$endpoints${endpoints:+,}http://${addrs[i]}:2379"
		urls="$urls${urls:+ }http://${addrs[i]}:4081"
	done
	for i in 0 1 2; do
		a=${addrs[i]}
		ip netns exec "${hosts[i]}" "$bin/etcd" --name "e$((i + 1))" --data-dir "$work/etcd$((i + 1))" \
			--listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
			--listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
			--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token mayu-demo \
			--log-level error >"$work/etcd$((i + 1)).log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 1 150); do
		ip netns exec "${hosts[0]}" "$bin/etcdctl" --endpoints "$endpoints" endpoint health >"$work/health" 2>&1 && break
		sleep 0.2
	done
	show <"$work/health"
	grep -c "is healthy" "$work/health" | grep -q 3 || die "etcd did not become healthy"
	etcd_yaml="endpoints: [${endpoints//,/, }]"
else
	endpoints=http://127.0.0.1:2379
fi

if [ "$REPLICAS" = 1 ]; then
	step "starting mayu in ${hosts[0]} (embedded etcd; DHCP 67, TFTP 69, HTTP 4081)"
else
	step "starting three mayu replicas, each advertising its own address; the first stage fails over between them (mayu_urls)"
fi
for i in "${!addrs[@]}"; do
	r=r$((i + 1))
	cat >"$work/$r.yaml" <<EOF
node:
  name: $r
  interface: eth0
  advertise_address: ${addrs[i]}
  data_dir: $work/data-$r
  files_dir: $files
  boot_files_dir: $boot
  admin_token_file: $work/admin-token
  etcd:
    $etcd_yaml
cluster:
  pools:
    - subnet: 10.99.0.0/24
      range: {start: 10.99.0.100, end: 10.99.0.199}
      router: ${addrs[0]}
      dns: [${addrs[0]}]
  static:
    subnet: 10.99.0.0/24
    range: {start: 10.99.0.10, end: 10.99.0.60}
    gateway: ${addrs[0]}
    dns: [${addrs[0]}]
  profiles:
    - {name: core, quantity: 3, tags: {rule-core: "true"}}
  install:
    kernel: installer/vmlinuz
    initrd: installer/initrd.img
    image: images/os.img
    disk: /dev/vda
    kernel_args: console=ttyS0 quiet
  templates:
    first_stage: templates/first-stage.sh
    final_config: templates/final-config.yaml
  template_vars:
    ssh_authorized_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnly demo@mayu
    ntp: ${addrs[0]}
    mayu_urls: "${urls:-http://${addrs[0]}:4081}"
EOF
	# One log for all replicas, each line tagged with its replica.
	ip netns exec "${hosts[i]}" "$bin/mayu" -config "$work/$r.yaml" -log-level debug \
		> >(sed -u "s/^/[$r] /" >>"$work/mayu.log") 2>&1 &
	pids+=($!)
	mayu_pids[i]=$!
done
touch "$work/mayu.log"
for _ in $(seq 1 300); do
	[ "$(grep -c "mayu started" "$work/mayu.log")" = "$REPLICAS" ] && grep -q "answering DHCP" "$work/mayu.log" && break
	sleep 0.2
done
grep "mayu started" "$work/mayu.log" | sed -E 's/time=[^ ]+ level=[A-Z]+ //' | show
mayulog "answering DHCP" 1

step "booting the VM: $FW firmware ($([ "$FW" = bios ] && echo SeaBIOS || echo OVMF)), SMBIOS serial $serial, MAC $mac, network first, disk second (qemu -accel tcg)"
mkdir -p "$work/vm"
"$bin/vmlab" run -netns "$sw" -tap tap0 -mac "$mac" -serial "$serial" -fw "$FW" \
	-disk "$work/vm/disk.raw" -dir "$work/vm" -name mayu-demo >"$work/vmlab.log" 2>&1 &
vm_pid=$!
pids+=("$vm_pid")
note "console: $work/vm/serial.log (times are seconds since qemu started)"
for _ in $(seq 1 50); do [ -f "$work/vm/serial.log" ] && break; sleep 0.1; done

step "1. the firmware runs qemu's iPXE NIC ROM, which asks DHCP; the leader answers with the script URL"
note "(qemu's NIC ROM is iPXE already, so steps 1-2 of the flow, PXE firmware and TFTP of iPXE, collapse into this one)"
mayulog "dhcp: ack.*$mac.*ipxe script"
console "Filename: http"
step "3-4. iPXE fetches mayu's chain script and sends serial, UUID and MAC; mayu registers the machine"
console "mayu: identifying"
mayulog "machine registered"
console "mayu: installing machine"
step "   iPXE loads the installer kernel and initrd from mayu and boots it"
console "boot/initrd"
console "mayu-installer: kernel" 90
step "5. the installer gets an address, fetches its first-stage script (state: installing) and runs it"
console "mayu-installer: DHCP lease"
mayulog "state=installing"
console "mayu-install\[$machine\]: writing the OS image"
console "mayu-install\[$machine\]: putting the final config"
console "mayu-install\[$machine\]: announcing installed"
mayulog "state=installed"
console "mayu-install\[$machine\]: done, rebooting"
step "6. the reboot: the firmware asks DHCP again, the leader ignores the installed machine, the firmware boots the disk"
if [ "$FW" = bios ]; then
	note "(SeaBIOS tries the disk after iPXE gives up: ~20 s)"
else
	note "(OVMF tries PXEv4, PXEv6 and HTTP boot before the disk: ~150 s)"
fi
mayulog "dhcp: ignored.*reason=installed" 60
console "MAYU-OS: kernel" 300
step "7. the installed OS brings up its static address from its final config and reports boot-complete (state: running)"
console "MAYU-OS: up:"
console "MAYU-OS: boot-complete reported"
mayulog "state=running"
addr=$(grep -o 'MAYU-OS: up: .*address=[0-9./]*' "$work/vm/serial.log" | tail -n 1 | sed 's/.*address=//; s,/.*,,')
ip netns exec "${hosts[0]}" busybox ping -c 1 -W 2 "$addr" >"$work/ping" 2>&1 || die "the OS's address $addr does not answer ping"
grep "bytes from" "$work/ping" | show

ctl_ns=${hosts[0]} # where mayuctl runs: a replica's host
ctl() { ip netns exec "$ctl_ns" env MAYU_SERVER=http://127.0.0.1:4080 MAYU_TOKEN_FILE="$work/admin-token" "$bin/mayuctl" "$@"; }
etcdctl() { ip netns exec "${hosts[0]}" "$bin/etcdctl" --endpoints "$endpoints" "$@"; }
step "mayuctl list"
ctl list | show
step "mayuctl status $machine"
ctl status "$machine" | show
[ "$REPLICAS" = 3 ] && { step "mayuctl replicas"; ctl replicas | show; }
step "etcdctl get /mayu/machines/$machine"
etcdctl get "/mayu/machines/$machine" --print-value-only | show
step "etcdctl get --prefix --keys-only /mayu/"
etcdctl get --prefix --keys-only /mayu/ | grep -v '^$' | show

step "8. mayuctl reinstall $machine (state: configured), then a power cycle: the next network boot installs again"
ctl reinstall "$machine" | show
kill -USR1 "$vm_pid" # vmlab resets the VM (QMP system_reset)
console "mayu: installing machine" 120
if [ "$REPLICAS" = 3 ]; then
	# The DHCP leader handed the machine its script URL, so the installer
	# talks to it: kill it the moment the first stage is out.
	leader=""
	for i in 0 1 2; do
		ip netns exec "${hosts[i]}" curl -sf --max-time 2 http://127.0.0.1:4082/leader >/dev/null 2>&1 && leader=$i
	done
	[ -n "$leader" ] || die "no replica leads DHCP"
	mayulog "\[r$((leader + 1))\] .*state=installing" 120
	killed_at=$(wc -l <"$work/mayu.log")
	{ kill -9 "${mayu_pids[leader]}" && wait "${mayu_pids[leader]}"; } 2>/dev/null || true
	ctl_ns=${hosts[(leader + 1) % 3]}
	step "   kill -9 of the leader r$((leader + 1)) while the machine installs: the first stage carries on at another replica"
	console "mayu-install\[$machine\]: retry 1:" 60
fi
console "mayu-install\[$machine\]: announcing installed" 120
mayulog "state=installed"
if [ "$REPLICAS" = 3 ]; then
	note "meanwhile another replica took over DHCP, after the election's session TTL (3 s):"
	for _ in $(seq 1 150); do
		tail -n +$((killed_at + 1)) "$work/mayu.log" | grep -q "answering DHCP" && break
		sleep 0.2
	done
	tail -n +$((killed_at + 1)) "$work/mayu.log" | grep -m1 "answering DHCP" | sed -E 's/time=[^ ]+ level=[A-Z]+ //' | show ||
		die "no replica took over DHCP"
fi
ctl list | show
if [ "$REPLICAS" = 3 ]; then
	step "mayuctl replicas (a dead replica's announcement expires after 10 s)"
	for _ in $(seq 1 75); do
		ctl replicas | grep -q "^r$((leader + 1)) " || break
		sleep 0.2
	done
	ctl replicas | show
fi

step "done: stopping the VM and mayu, removing the namespaces and $work"
