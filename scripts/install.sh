#!/usr/bin/env bash
# Installs `sluice` — a release build into ~/.cargo/bin (cargo install) — with its bash, zsh and
# fish completions and its manual page under ~/.local/share (or $PREFIX/share).
#
#   scripts/install.sh                 # build and install everything
#   scripts/install.sh --bin PATH      # install completions and man page of an existing binary
#
# Afterwards: `sluice --version`, `man sluice` (with ~/.local/share/man on MANPATH, as on most
# systems), and completions in new shells (bash-completion, zsh with site-functions on fpath, fish).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${PREFIX:-$HOME/.local}"
bin=""
case "${1:-}" in
  --bin) bin="$2" ;;
  "") ;;
  *) echo "usage: scripts/install.sh [--bin PATH]" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
  cargo install --path engine --locked
  bin="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/sluice"
fi
share="$prefix/share"
mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" \
  "$share/fish/vendor_completions.d" "$share/man/man1"
"$bin" completions bash > "$share/bash-completion/completions/sluice"
"$bin" completions zsh > "$share/zsh/site-functions/_sluice"
"$bin" completions fish > "$share/fish/vendor_completions.d/sluice.fish"
"$bin" man > "$share/man/man1/sluice.1"
echo "installed $bin: $("$bin" --version)"
echo "completions: $share/{bash-completion/completions/sluice,zsh/site-functions/_sluice,fish/vendor_completions.d/sluice.fish}"
echo "manual page: $share/man/man1/sluice.1"
