#!/usr/bin/env bash
# tools/deps.sh - `make deps`: install every Debian package and npm tool that
# building and testing aidos needs. Idempotent and quiet when all is there;
# needs root (or sudo) only when something is missing. Debian 12.
#
#   Debian: gcc libc6-dev make clang libclang-rt-14-dev (LeakSanitizer/UBSan runtime for
#           clang) libcmocka-dev python3-onnx python3-numpy libonnx-testdata
#           nodejs npm gnuplot-nox, and what the control plane links
#           (protobuf-c-compiler libprotobuf-c-dev libgrpc-dev libucx-dev libnuma-dev), the local
#           cluster and its benchmarks (iproute2 util-linux ucx-utils), the verbs
#           transport and make test-rxe (libibverbs-dev librdmacm-dev qemu-system-x86 cpio)
#   npm:    tools/npm/package.json + package-lock.json -> tools/npm/node_modules
#           (onnxruntime-node, the reference peer; the model packages listed
#           there as devDependencies are fetched by tools/fetch-models.sh)
#
# Node.js from another apt source (NodeSource's nodejs bundles npm and
# conflicts with Debian's npm package) is accepted as it is: nodejs and npm
# count as present when the commands work.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npmdir=$root/tools/npm

die() { echo "deps: error: $*" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

pkgs=(gcc libc6-dev make clang libclang-rt-14-dev libcmocka-dev python3-onnx python3-numpy
      libonnx-testdata nodejs npm gnuplot-nox
      # control plane and transport (Makefile: protoc-c, -lgrpc -lgpr
      # -lprotobuf-c -lucp -lucs)
      protobuf-c-compiler libprotobuf-c-dev libgrpc-dev libucx-dev
      # NUMA placement of agent pools (Makefile: -lnuma)
      libnuma-dev
      # the one-machine cluster and its benchmarks: ip, unshare, ucx_perftest
      iproute2 util-linux ucx-utils
      # the raw verbs transport (Makefile: -lrdmacm -libverbs) and make test-rxe
      # (Debian's kernel + rdma-core booted under QEMU; tools/test-rxe.sh)
      libibverbs-dev librdmacm-dev qemu-system-x86 cpio
      # the FP engine's GEMM peer and fast path (oneDNN's dnnl_sgemm; issue 8)
      libdnnl-dev)

installed() {  # dpkg-query exits 0 for removed-but-configured packages: check the status
	[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

missing=()
for p in "${pkgs[@]}"; do
	case $p in
	nodejs) command -v node >/dev/null 2>&1 && continue ;;
	npm) command -v npm >/dev/null 2>&1 && continue ;;
	esac
	installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
	command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get: install them by hand"
	sudo=()
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "missing packages (${missing[*]}): run as root or install sudo"
		sudo=(sudo)
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! "${sudo[@]}" apt-get update -q >"$log" 2>&1; then
		cat "$log" >&2
		die "apt-get update failed"
	fi
	if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
		</dev/null >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "apt-get install ${missing[*]} failed"
	fi
	for p in "${missing[@]}"; do
		case $p in
		nodejs) command -v node >/dev/null 2>&1 || die "nodejs installed but no 'node' command" ;;
		npm) command -v npm >/dev/null 2>&1 || die "npm installed but no 'npm' command" ;;
		*) installed "$p" || die "$p is still not installed after apt-get install" ;;
		esac
	done
fi

# ---- npm tools ----
# Up to date when every dependency in package.json is installed at its
# pinned version (devDependencies are not installed: see package.json).
npm_ok() {
	node -e '
		const fs = require("fs"), path = require("path");
		const dir = process.argv[1];
		const deps = require(path.join(dir, "package.json")).dependencies || {};
		for (const [name, ver] of Object.entries(deps)) {
			const f = path.join(dir, "node_modules", name, "package.json");
			if (!fs.existsSync(f) || JSON.parse(fs.readFileSync(f, "utf8")).version !== ver)
				process.exit(1);
		}' "$npmdir" 2>/dev/null
}

if ! npm_ok; then
	echo "deps: installing npm tools into tools/npm/node_modules"
	cmd=(ci)
	[[ -f $npmdir/package-lock.json ]] || cmd=(install)
	# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script would
	# download CUDA binaries from outside the npm registry; the CPU build it
	# bundles is all aidos compares against.
	if ! (cd "$npmdir" && ONNXRUNTIME_NODE_INSTALL=skip npm "${cmd[@]}" --omit=dev \
		--no-audit --no-fund --loglevel=error) </dev/null >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "npm ${cmd[*]} in tools/npm failed"
	fi
	npm_ok || die "npm ${cmd[*]} finished but tools/npm/node_modules does not hold the pinned versions"
	(cd "$npmdir" && node -e 'require("onnxruntime-node")') >/dev/null 2>&1 ||
		die "onnxruntime-node is installed but does not load (node $(node --version))"
fi
exit 0
