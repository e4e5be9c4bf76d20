#!/usr/bin/env bash
# Garden Gateway: remove it; the same as `systemd/install.sh uninstall [OPTIONS]`.
#
#   sudo systemd/uninstall.sh                  remove the program; keep config, data (the spool) and user
#   sudo systemd/uninstall.sh --purge --yes    ... and delete them too
#   --root DIR                                 work on the tree under DIR instead of /
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/install.sh" uninstall "$@"
