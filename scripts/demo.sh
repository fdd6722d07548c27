#!/bin/bash
# mayu demo: starts mayu on its embedded etcd and walks one machine through
# the boot flow over HTTP exactly as a node does (iPXE script, installer
# kernel and initrd, first-stage script, OS image, final config, installed,
# local boot, boot-complete), then shows it with mayuctl and etcdctl.
# Everything listens on 127.0.0.1; everything is removed at the end, also
# when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bin=$top/bin
work=$(mktemp -d /tmp/mayu-demo.XXXXXX)
mayu_pid=""

cleanup() {
	if [ -n "$mayu_pid" ] && kill -0 "$mayu_pid" 2>/dev/null; then
		kill "$mayu_pid" && wait "$mayu_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { sed 's/^/    /'; }

# Ports away from the usual ones so the demo runs beside a real mayu.
http=14081 admin=14080 metrics=14082 etcd_client=12379 etcd_peer=12380
url=http://127.0.0.1:$http

step "preparing files: installer kernel and initrd, OS image, templates"
files=$work/files
mkdir -p "$files/installer" "$files/images" "$files/templates"
# Stand-ins for a real installer and OS image (the VM demo boots real ones).
head -c 1048576 /dev/urandom >"$files/installer/vmlinuz"
head -c 2097152 /dev/urandom >"$files/installer/initrd.img"
head -c 8388608 /dev/urandom >"$files/images/os.img"
cp etc/templates/first-stage.sh etc/templates/final-config.yaml "$files/templates/"
head -c 24 /dev/urandom | base64 >"$work/admin-token"
chmod 600 "$work/admin-token"
ls -l "$files/installer" "$files/images" | show

cat >"$work/mayu.yaml" <<EOF
node:
  name: demo-replica
  advertise_address: 127.0.0.1
  listen_address: 127.0.0.1
  data_dir: $work/data
  files_dir: $files
  admin_token_file: $work/admin-token
  etcd:
    embedded:
      client_url: http://127.0.0.1:$etcd_client
      peer_url: http://127.0.0.1:$etcd_peer
  ports: {dhcp: 0, tftp: 0, http: $http, admin: $admin, metrics: $metrics}
cluster:
  pools:
    - subnet: 10.99.0.0/24
      range: {start: 10.99.0.100, end: 10.99.0.199}
      router: 10.99.0.1
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

step "starting mayu (embedded etcd in $work/data)"
"$bin/mayu" -config "$work/mayu.yaml" >"$work/mayu.log" 2>&1 &
mayu_pid=$!
for _ in $(seq 1 100); do
	curl -fsS "http://127.0.0.1:$metrics/readyz" >/dev/null 2>&1 && break
	kill -0 "$mayu_pid" 2>/dev/null || { cat "$work/mayu.log"; exit 1; }
	sleep 0.2
done
curl -fsS "http://127.0.0.1:$metrics/readyz" | show
head -n 3 "$work/mayu.log" | show

# The machine: QEMU-like SMBIOS serial, UUID and MAC.
serial=DEMO-SN-0001
serial_hex=$(printf %s "$serial" | od -An -tx1 | tr -d ' \n')
uuid=8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b
mac=52-54-00-12-34-56

step "iPXE fetches the chain script DHCP points it at: GET /boot.ipxe"
curl -fsS "$url/boot.ipxe" | show

step "iPXE sends its identity: GET /ipxe?serial=$serial_hex&uuid=$uuid&mac=$mac&arch=x86_64"
script=$(curl -fsS "$url/ipxe?serial=$serial_hex&uuid=$uuid&mac=$mac&arch=x86_64")
printf '%s\n' "$script" | show
first_stage=$(printf '%s\n' "$script" | grep -o 'mayu.first_stage=[^ ]*' | cut -d= -f2-)
id=$(printf '%s\n' "$script" | grep -o 'mayu.id=[^ ]*' | cut -d= -f2-)

step "iPXE loads the installer: GET /boot/kernel and /boot/initrd"
for f in kernel initrd; do
	curl -fsS -o "$work/$f" -w "    /boot/$f: %{http_code}, %{size_download} bytes\n" "$url/boot/$f"
done

step "the installer fetches its first-stage script (state becomes installing)"
curl -fsS "$first_stage" -o "$work/first-stage.sh"
sed -n '1,12p' "$work/first-stage.sh" | show
echo "    ... ($(wc -l <"$work/first-stage.sh") lines)"
sh -n "$work/first-stage.sh" && echo "    (the script parses as POSIX sh)"

image_url=$(sed -n "s/.*retry fetch '\([^']*boot\/image\)'.*/\1/p" "$work/first-stage.sh")
final_url=$(sed -n "s/.*retry fetch '\([^']*final-config[^']*\)'.*/\1/p" "$work/first-stage.sh")
installed_url=$(sed -n "s/.*retry post '\([^']*\/installed[^']*\)'.*/\1/p" "$work/first-stage.sh")

step "it writes the OS image to its disk: GET /boot/image (then a resumed Range request)"
curl -fsS -o "$work/disk.img" -w "    %{http_code}, %{size_download} bytes\n" "$image_url"
cmp "$work/disk.img" "$files/images/os.img" && echo "    image identical to the served file"
curl -fsS -r 8388000- -o /dev/null -w "    Range 8388000-: %{http_code}, %{size_download} bytes\n" "$image_url"

step "it fetches its final config and puts it on the disk"
curl -fsS "$final_url" -o "$work/final-config.yaml"
show <"$work/final-config.yaml"

step "it announces installed, then reboots"
curl -fsS -X POST "$installed_url" | show

step "after the reboot, iPXE asks again: the machine gets a local-boot script, never the installer"
curl -fsS "$url/ipxe?serial=$serial_hex&uuid=$uuid&mac=$mac&arch=x86_64" | show

step "and its old token no longer opens the installer calls"
curl -sS -o /dev/null -w "    GET first-stage: %{http_code}\n" "$first_stage"

step "the installed OS reports boot-complete (state becomes running)"
boot_complete=$(sed -n 's/^boot_complete_url: //p' "$work/final-config.yaml")
curl -fsS -X POST "$boot_complete" | show

export MAYU_SERVER=http://127.0.0.1:$admin MAYU_TOKEN_FILE=$work/admin-token
step "mayuctl list"
"$bin/mayuctl" list | show
step "mayuctl status $id"
"$bin/mayuctl" status "$id" | show

step "etcdctl get --prefix /mayu/machines/"
"$bin/etcdctl" --endpoints "http://127.0.0.1:$etcd_client" get --prefix /mayu/machines/ | show
step "etcdctl get --prefix --keys-only /mayu/"
"$bin/etcdctl" --endpoints "http://127.0.0.1:$etcd_client" get --prefix --keys-only /mayu/ | grep -v '^$' | show

step "mayu's log"
show <"$work/mayu.log"

step "done: stopping mayu and removing $work"
