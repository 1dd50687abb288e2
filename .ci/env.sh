# Sourced by .ci/run and .ci/checks: build and test with the Go release
# go.mod names in its toolchain line (it carries the standard library's
# security fixes), fetched from the module proxy when the machine's Go is
# older. A machine whose go.env says GOTOOLCHAIN=local would ignore that
# line. PGLOCK_KEEP_GOTOOLCHAIN=1 keeps the caller's setting.
toolchain=$(awk '$1 == "toolchain" { print $2 }' go.mod)
if [ -n "$toolchain" ] && [ -z "${PGLOCK_KEEP_GOTOOLCHAIN:-}" ]; then
	export GOTOOLCHAIN=$toolchain
fi
