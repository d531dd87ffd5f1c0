#!/usr/bin/env bash
# Builds kube-apiserver and etcd for the tests of the Kubernetes source (internal/kubetest) into
# $COSTMETER_K8S_TESTBIN (default: ${XDG_CACHE_HOME:-$HOME/.cache}/costmeter/k8s-testbin/<kubernetes version>).
# The binaries are reused while a stamp of this module's inputs matches; otherwise they are rebuilt.
# No kube-controller-manager: the harness does the little of its work the tests need. Cold and warm
# figures: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)
if [[ ! $k8s_version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  echo "k8s-testbin: cannot read the k8s.io/kubernetes version from test/k8s/go.mod" >&2
  exit 1
fi
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}
out=${COSTMETER_K8S_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/costmeter/k8s-testbin/$k8s_version}
stamp=$(cat go.mod go.sum build.sh etcd/main.go | sha256sum | cut -d' ' -f1)

if [[ -x $out/kube-apiserver && -x $out/etcd && -f $out/stamp &&
  $(cat "$out/stamp") == "$stamp" ]]; then
  echo "k8s-testbin: up to date in $out"
  exit 0
fi

mkdir -p "$out"
# The stamp goes first, and binaries of an earlier layout (kube-controller-manager) with it.
rm -f "$out/stamp" "$out/kube-controller-manager"
# Without these /version reports v0.0.0-master and clients fail to parse it.
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
start=$SECONDS
echo "k8s-testbin: building kube-apiserver $k8s_version and etcd into $out (cold: see docs/testing.md)"
# One go build for both, so that their packages compile in parallel; -X of a package etcd does not
# link is ignored.
go build -trimpath -ldflags "-s -w$ldflags" -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver ./etcd
echo "$stamp" >"$out/stamp"
echo "k8s-testbin: built in $((SECONDS - start))s: $(ls "$out" | tr '\n' ' ')"
