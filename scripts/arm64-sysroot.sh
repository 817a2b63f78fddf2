#!/usr/bin/env bash
# Build (once, cached) an emulated Raspberry Pi userland for the edge runtime:
# Debian's arm64 python3.11 unpacked into a sysroot, plus aarch64 wheels of numpy,
# ai-edge-litert, onnxruntime and pytest. Run it with scripts/arm64-python.
#   usage: scripts/arm64-sysroot.sh [SYSROOT]   (default: .cache/arm64-sysroot)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
sysroot="${1:-$here/.cache/arm64-sysroot}"
stamp="$sysroot/.complete"
[ -f "$stamp" ] && { echo "$sysroot"; exit 0; }
command -v qemu-aarch64-static >/dev/null || { echo "error: qemu-aarch64-static is missing: apt-get install qemu-user-static" >&2; exit 3; }
rm -rf "$sysroot" "$sysroot.apt"
state="$sysroot.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc/preferences.d" "$sysroot"
# The mirror and suites come from this host's own apt sources (deb822 or one-line format).
: > "$state/etc/sources.list"
for file in /etc/apt/sources.list.d/*.sources; do
  [ -f "$file" ] || continue
  awk -v arch=arm64 '
    /^URIs:/ {uri=$2} /^Suites:/ {$1=""; suites=$0} /^Components:/ {$1=""; comps=$0}
    /^Signed-By:/ {key=$2}
    /^$/ {if (uri) for (i=split(suites,s," "); i>0; i--) print "deb [arch=" arch " signed-by=" key "] " uri " " s[i] comps; uri=""}
    END {if (uri) for (i=split(suites,s," "); i>0; i--) print "deb [arch=" arch " signed-by=" key "] " uri " " s[i] comps}
  ' "$file" >> "$state/etc/sources.list"
done
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$file" ] || continue
  grep -E '^deb ' "$file" | sed -E 's/^deb (\[[^]]*\] )?/deb [arch=arm64] /' >> "$state/etc/sources.list" || true
done
[ -s "$state/etc/sources.list" ] || { echo "error: no apt sources found on this host" >&2; exit 3; }
apt_opts=(-o "Dir::State=$state" -o "Dir::State::status=/dev/null" -o "Dir::Cache=$state/cache"
          -o "Dir::Etc::SourceList=$state/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$state/etc/preferences.d"
          -o "APT::Architecture=arm64" -o "APT::Architectures=arm64" -o "Debug::NoLocking=1")
apt-get -qq "${apt_opts[@]}" update
packages=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends \
  python3.11-minimal libpython3.11-stdlib libgcc-s1 libstdc++6 | grep -E '^[a-z0-9]' | sort -u \
  | grep -vE '^(debconf|perl|dpkg|tar|coreutils|bash|gcc-12-base:|.*-dev)' )
(cd "$state/cache/archives" && apt-get -qq "${apt_opts[@]}" download $packages)
for deb in "$state"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
mkdir -p "$sysroot/proc"
# A Raspberry Pi 4's /proc/cpuinfo (onnxruntime's cpuinfo crashes on import without one).
cat > "$sysroot/proc/cpuinfo" <<'CPUINFO'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Revision	: c03111
Model		: Raspberry Pi 4 Model B Rev 1.1
CPUINFO
python3 -m pip install --quiet --disable-pip-version-check --no-compile \
  --target "$sysroot/site" --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --implementation cp --python-version 3.11 --only-binary=:all: \
  "numpy>=1.26,<3" "ai-edge-litert>=2.0,<3" "onnxruntime>=1.20,<2" "pytest>=8"
rm -rf "$state"
touch "$stamp"
echo "$sysroot"
