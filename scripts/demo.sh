#!/bin/bash
# mayu demo: starts mayu on its embedded etcd inside a network namespace and
# boots one machine through the whole flow as the machine does it, from a
# second namespace joined to the first by a veth:
#   1. PXE firmware's DHCP (busybox udhcpc posing as BIOS PXE)  -> undionly.kpxe
#   2. TFTP of undionly.kpxe (curl tftp://)
#   3. iPXE's DHCP                                               -> the script URL
#   4-7. HTTP: iPXE script, installer, first stage, OS image, final config,
#        installed; the next boot's DHCP gets no answer; boot-complete
# then shows the machine with mayuctl and etcdctl. Nothing touches the
# machine's own interfaces; namespaces, processes and files are removed at
# the end, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bin=$top/bin
id=$$
srv=mayu-demo-$id-srv
cli=mayu-demo-$id-cli
work=$(mktemp -d /tmp/mayu-demo.XXXXXX)
mayu_pid=""

cleanup() {
	set +e
	if [ -n "$mayu_pid" ] && kill -0 "$mayu_pid" 2>/dev/null; then
		kill "$mayu_pid"
		wait "$mayu_pid" 2>/dev/null
	fi
	for ns in "$cli" "$srv"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { sed 's/^/    /'; }
in_srv() { ip netns exec "$srv" "$@"; }
in_cli() { ip netns exec "$cli" "$@"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)" >&2; exit 1; }

step "a lab network: namespace $srv (mayu, 10.99.0.1) <-veth-> $cli (the machine)"
ip netns add "$srv"
ip netns add "$cli"
ip -n "$srv" link add srv0 type veth peer name cli0 netns "$cli"
ip -n "$srv" addr add 10.99.0.1/24 dev srv0
ip -n "$srv" link set lo up
ip -n "$srv" link set srv0 up
ip -n "$cli" link set lo up
ip -n "$cli" link set cli0 address 52:54:00:12:34:56 up
ip -n "$srv" -br addr | show

step "files: installer kernel and initrd, OS image, templates, iPXE builds"
files=$work/files boot=$work/boot
mkdir -p "$files/installer" "$files/images" "$files/templates" "$boot"
# Stand-ins for a real installer and OS image (the VM demo boots real ones).
head -c 1048576 /dev/urandom >"$files/installer/vmlinuz"
head -c 2097152 /dev/urandom >"$files/installer/initrd.img"
head -c 8388608 /dev/urandom >"$files/images/os.img"
cp etc/templates/first-stage.sh etc/templates/final-config.yaml "$files/templates/"
# Debian's iPXE builds, as files (Debian's ipxe.efi is a symlink into /boot).
cp -L /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "$boot/"
head -c 24 /dev/urandom | base64 >"$work/admin-token"
chmod 600 "$work/admin-token"
(cd "$work" && ls -l files/installer files/images boot) | show

cat >"$work/mayu.yaml" <<EOF
node:
  name: demo-replica
  interface: srv0
  advertise_address: 10.99.0.1
  data_dir: $work/data
  files_dir: $files
  boot_files_dir: $boot
  admin_token_file: $work/admin-token
cluster:
  pools:
    - subnet: 10.99.0.0/24
      range: {start: 10.99.0.100, end: 10.99.0.199}
      router: 10.99.0.1
      dns: [10.99.0.1]
  static:
    subnet: 10.99.0.0/24
    range: {start: 10.99.0.10, end: 10.99.0.60}
    gateway: 10.99.0.1
    dns: [10.99.0.1]
  profiles:
    - {name: core, quantity: 3, tags: {rule-core: "true"}}
  install:
    kernel: installer/vmlinuz
    initrd: installer/initrd.img
    image: images/os.img
    disk: /dev/vda
    kernel_args: console=ttyS0
  templates:
    first_stage: templates/first-stage.sh
    final_config: templates/final-config.yaml
  template_vars:
    ssh_authorized_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnly demo@mayu
    ntp: 10.99.0.1
EOF

step "starting mayu in $srv (embedded etcd in $work/data; DHCP 67, TFTP 69, HTTP 4081)"
in_srv "$bin/mayu" -config "$work/mayu.yaml" >"$work/mayu.log" 2>&1 &
mayu_pid=$!
for _ in $(seq 1 150); do
	grep -q "answering DHCP" "$work/mayu.log" && break
	kill -0 "$mayu_pid" 2>/dev/null || { cat "$work/mayu.log"; exit 1; }
	sleep 0.2
done
grep -q "answering DHCP" "$work/mayu.log" || { cat "$work/mayu.log"; exit 1; }
grep -E "mayu started|elected|answering" "$work/mayu.log" | show

# A DHCP client that prints what the server answered.
cat >"$work/dhcp-event.sh" <<'EOF'
#!/bin/sh
[ "$1" = bound ] && echo "address $ip/$mask from server $serverid, next-server ${siaddr:-none}, boot file ${boot_file:-none}"
exit 0
EOF
chmod +x "$work/dhcp-event.sh"
dhcp() { in_cli busybox udhcpc -i cli0 -f -q -n -t 3 -T 1 -A 1 -s "$work/dhcp-event.sh" "$@" 2>&1 | grep -v '^udhcpc: \(started\|broadcasting\|sending\)' || true; }

step "1. the machine's PXE firmware (BIOS, arch 0) asks DHCP"
dhcp -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 | show

ip -n "$cli" addr add 10.99.0.250/24 dev cli0 # the address the client now uses
step "2. it fetches iPXE over TFTP (blksize 1468)"
in_cli curl -sS --tftp-blksize 1468 -o "$work/undionly.kpxe" -w "    tftp://10.99.0.1/undionly.kpxe: %{size_download} bytes\n" tftp://10.99.0.1/undionly.kpxe
cmp "$work/undionly.kpxe" "$boot/undionly.kpxe" && echo "    identical to the file served"

step "3. iPXE asks DHCP again (user class iPXE)"
dhcp -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 -x 0x4d:69505845 | show

url=http://10.99.0.1:4081
serial=DEMO-SN-0001
serial_hex=$(printf %s "$serial" | od -An -tx1 | tr -d ' \n')
uuid=8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b
mac=52-54-00-12-34-56
get() { in_cli curl -fsS "$@"; }

step "4. iPXE fetches the chain script, then sends its identity: GET /ipxe?serial=$serial_hex&uuid=…&mac=$mac"
get "$url/boot.ipxe" | show
script=$(get "$url/ipxe?serial=$serial_hex&uuid=$uuid&mac=$mac&arch=i386")
printf '%s\n' "$script" | show
first_stage=$(printf '%s\n' "$script" | grep -o 'mayu.first_stage=[^ ]*' | cut -d= -f2-)
machine=$(printf '%s\n' "$script" | grep -o 'mayu.id=[^ ]*' | cut -d= -f2-)

step "   iPXE loads the installer: GET /boot/kernel and /boot/initrd"
for f in kernel initrd; do
	get -o /dev/null -w "    /boot/$f: %{http_code}, %{size_download} bytes\n" "$url/boot/$f"
done

step "5. the installer fetches its first-stage script (state: installing)"
get "$first_stage" -o "$work/first-stage.sh"
sed -n '1,12p' "$work/first-stage.sh" | show
echo "    ... ($(wc -l <"$work/first-stage.sh") lines; it parses as POSIX sh: $(sh -n "$work/first-stage.sh" && echo yes))"
image_url=$(sed -n "s/.*retry fetch '\([^']*boot\/image\)'.*/\1/p" "$work/first-stage.sh")
final_url=$(sed -n "s/.*retry fetch '\([^']*final-config[^']*\)'.*/\1/p" "$work/first-stage.sh")
installed_url=$(sed -n "s/.*retry post '\([^']*\/installed?[^']*\)'.*/\1/p" "$work/first-stage.sh")

step "   it writes the OS image to its disk: GET /boot/image (then a resumed Range request)"
get -o "$work/disk.img" -w "    %{http_code}, %{size_download} bytes\n" "$image_url"
cmp "$work/disk.img" "$files/images/os.img" && echo "    image identical to the served file"
get -r 8388000- -o /dev/null -w "    Range 8388000-: %{http_code}, %{size_download} bytes\n" "$image_url"

step "   it fetches its final config and puts it on the disk"
get "$final_url" -o "$work/final-config.yaml"
show <"$work/final-config.yaml"

step "   it announces installed (state: installed), then reboots"
get -X POST "$installed_url" | show

step "6. the next boot: the firmware asks DHCP, and the leader stays silent"
ip -n "$cli" addr flush dev cli0
out=$(dhcp -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000)
printf '%s\n' "$out" | show
if printf '%s\n' "$out" | grep -q '^address'; then echo "    an installed machine got an answer" >&2; exit 1; fi
echo "    no answer: the firmware falls through to the disk"
ip -n "$cli" addr add 10.99.0.10/24 dev cli0 # the installed OS's static InternalAddr
echo "    if its iPXE asked for a script anyway, it would get a local boot:"
get "$url/ipxe?serial=$serial_hex&uuid=$uuid&mac=$mac&arch=i386" | show

step "7. the installed OS reports boot-complete (state: running)"
boot_complete=$(sed -n 's/^boot_complete_url: //p' "$work/final-config.yaml")
get -X POST "$boot_complete" | show
echo "    its token no longer opens the installer calls: GET first-stage -> $(in_cli curl -s -o /dev/null -w '%{http_code}' "$first_stage")"

ctl() { in_srv env MAYU_SERVER=http://127.0.0.1:4080 MAYU_TOKEN_FILE="$work/admin-token" "$bin/mayuctl" "$@"; }
step "mayuctl list"
ctl list | show
step "mayuctl status $machine"
ctl status "$machine" | show

step "etcdctl get --prefix /mayu/machines/"
in_srv "$bin/etcdctl" --endpoints http://127.0.0.1:2379 get --prefix /mayu/machines/ | show
step "etcdctl get --prefix /mayu/leases/"
in_srv "$bin/etcdctl" --endpoints http://127.0.0.1:2379 get --prefix /mayu/leases/ | show
step "etcdctl get --prefix --keys-only /mayu/"
in_srv "$bin/etcdctl" --endpoints http://127.0.0.1:2379 get --prefix --keys-only /mayu/ | grep -v '^$' | show

step "mayu's log"
show <"$work/mayu.log"

step "done: stopping mayu, removing the namespaces and $work"
