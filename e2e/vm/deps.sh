#!/usr/bin/env bash
# deps.sh: install on the host what the VM test harness needs.
#
# Idempotent and quiet: packages already installed are skipped, so the
# (slow) apt-get update only runs when something is actually missing.
#
#   qemu-system-x86  the emulator (TCG only: KVM guests hang on the development machine, itself a guest)
#   busybox-static   /init shell and tools inside the guest initramfs
#   cpio             packs the initramfs
#   xz-utils, zstd   Debian kernel modules are .ko.xz (bullseye/bookworm) or
#                    .ko.zst (trixie); busybox insmod cannot read either, so
#                    they are decompressed on the host
#   iproute2         `ip`, copied into the guest (tests create netns/veth)
#   nftables         `nft`, copied into the guest
#   kmod             modinfo/depmod, to resolve module dependencies on the host
#   dpkg-dev bits    dpkg-deb ships with dpkg, nothing extra needed
set -euo pipefail

pkgs=(qemu-system-x86 busybox-static cpio xz-utils zstd iproute2 nftables kmod)

missing=()
for p in "${pkgs[@]}"; do
	# dpkg-query prints "install ok installed" only for fully installed packages.
	if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends: qemu-system-x86 recommends a GUI stack we do not need.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
