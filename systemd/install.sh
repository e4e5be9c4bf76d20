#!/usr/bin/env bash
# Garden Gateway: install, update or remove it on Raspberry Pi OS / Debian 12 (bookworm).
#
#   sudo systemd/install.sh [OPTIONS]                      install or update (run it again: changes nothing)
#   sudo systemd/install.sh uninstall [OPTIONS]            remove the program; keep config, data, user
#   sudo systemd/install.sh uninstall --purge --yes        ... and delete config, data (the spool:
#                                                          readings not yet in InfluxDB!) and the user
# Options:
#   --root DIR     work on the tree under DIR instead of / (tests, images): no apt, and nothing
#                  that talks to a running systemd, udev, journald or Mosquitto
#   --from DIR     the checkout to install (default: the one this script is in)
#   --python PATH  the Python that makes the virtual environment (default: /usr/bin/python3)
#   --no-apt       do not install Debian packages; only check that the needed commands exist
#   --no-start     enable the service but do not start or restart it
#   --no-influxdb  no local InfluxDB (the park writes to the regency's central one)
#   --purge        (uninstall) also delete /etc/garden-gateway, /var/lib/garden-gateway, the
#                  Mosquitto password file and the user; refused without --yes
#   --yes          confirm --purge
#   -h, --help     this text
# Every step prints "changed", "unchanged", "removed" or "absent" and the path.
# Exit codes: 0 done, 1 failed (the message says why), 2 bad usage.
set -euo pipefail
umask 022

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage_error() { echo "install.sh: $*" >&2; echo "try: $0 --help" >&2; exit 2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACTION=install
ROOT=/
FROM=$(dirname "$SCRIPT_DIR")
PYTHON=/usr/bin/python3
APT=1
START=1
INFLUXDB=1
PURGE=0
YES=0

if [[ ${1:-} == uninstall || ${1:-} == install ]]; then
  ACTION=$1
  shift
fi
while (($#)); do
  case $1 in
    --root) (($# >= 2)) || usage_error "--root needs a directory"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --from) (($# >= 2)) || usage_error "--from needs a directory"; FROM=$2; shift 2 ;;
    --from=*) FROM=${1#--from=}; shift ;;
    --python) (($# >= 2)) || usage_error "--python needs a path"; PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#--python=}; shift ;;
    --no-apt) APT=0; shift ;;
    --no-start) START=0; shift ;;
    --no-influxdb) INFLUXDB=0; shift ;;
    --purge) PURGE=1; shift ;;
    --yes) YES=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
  esac
done

[[ $ACTION == uninstall || $PURGE == 0 ]] || usage_error "--purge is an uninstall option"
[[ -d $ROOT ]] || usage_error "--root $ROOT: not a directory"
ROOT=$(realpath -- "$ROOT")
# LIVE: this is the running system (apt, systemctl, udevadm, journald act on it).
LIVE=0
[[ $ROOT == / ]] && LIVE=1
R=${ROOT%/}   # prefix for paths: "" for /, "/tmp/x" for a scratch root

if [[ $EUID -ne 0 ]]; then
  if ((LIVE)); then
    die "must run as root to install on this system: sudo $0 $ACTION ..."
  fi
  die "must run as root (users are made with useradd --root, files are given to them)"
fi

if [[ $ACTION == uninstall && $PURGE == 1 && $YES == 0 ]]; then
  echo "install.sh: --purge deletes for good:" >&2
  echo "  $R/var/lib/garden-gateway  (the spool: readings not yet delivered to InfluxDB," >&2
  echo "                              the device registry, outages and chart history)" >&2
  echo "  $R/etc/garden-gateway      (config.yaml and secrets.env)" >&2
  echo "  $R/etc/mosquitto/garden.passwd, garden.acl and the user garden-gateway" >&2
  echo "add --yes to do that; without --purge, uninstall keeps them" >&2
  exit 2
fi

[[ -d $ROOT/etc ]] || die "$ROOT/etc is missing: not a system root"
# One run at a time per root: a lock on its /etc (opening a folder to read changes nothing).
exec 9<"$ROOT/etc"
flock -n 9 || die "another install.sh is working on $ROOT"

NAME=garden-gateway
OPT=$R/opt/$NAME
VENV=$OPT/.venv
ETC=$R/etc/$NAME
DATA=$R/var/lib/$NAME
UNIT=$R/etc/systemd/system/$NAME.service
UDEV_RULE=$R/etc/udev/rules.d/99-garden-gateway-serial.rules
JOURNALD=$R/etc/systemd/journald.conf.d/garden-gateway.conf
MOSQ_CONF=$R/etc/mosquitto/conf.d/garden.conf
MOSQ_PASSWD=$R/etc/mosquitto/garden.passwd
MQTT_USER=garden-gateway
# One broker account per device (garden-gateway devices): the accounts file is the source of
# truth, the ACL is made from it, and the ACL snippet (acl_file ...) turns enforcing on.
ACCOUNTS=$ETC/broker-accounts.yaml
MOSQ_ACL=$R/etc/mosquitto/garden.acl
MOSQ_ACL_CONF=$R/etc/mosquitto/conf.d/garden-acl.conf
# What the program is: copied to /opt/garden-gateway, which pip installs in editable mode.
# pyproject.toml maps dashboard/ and config/ to the data packages garden_gateway_files.*, so the
# editable finder gives gateway/core/resources.py the pages and the example config there.
TREES=(gateway devices dashboard config systemd docs)
TOP_FILES=(pyproject.toml README.md CHANGELOG.md)
APT_PACKAGES=(mosquitto mosquitto-clients python3-venv openssl)
((INFLUXDB)) && APT_PACKAGES+=(influxdb)

CHANGES=0
UNCHANGED=0
TMP=$(mktemp -d)   # outside ROOT: comparing never touches the tree
trap 'rm -rf -- "$TMP"' EXIT

say() { printf '%-10s %s\n' "$1" "$2"; }
changed() { say changed "$1"; CHANGES=$((CHANGES + 1)); }
unchanged() { say unchanged "$1"; UNCHANGED=$((UNCHANGED + 1)); }

# Numeric ids from ROOT's own files: the host's names may mean other numbers, or nothing.
uid_of() { awk -F: -v n="$1" '$1 == n { print $3; exit }' "$R/etc/passwd"; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3; exit }' "$R/etc/group"; }
in_group() {  # in_group GROUP USER
  awk -F: -v g="$1" -v u="$2" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' "$R/etc/group"
}

# put_file SRC DEST MODE UID GID: make DEST a copy of SRC with that mode and owner, writing
# only what differs. Sets PUT_CHANGED to 1 when something was written.
PUT_CHANGED=0
put_file() {
  local src=$1 dest=$2 mode=$3 uid=$4 gid=$5
  PUT_CHANGED=0
  if [[ -f $dest && ! -L $dest ]] && cmp -s -- "$src" "$dest"; then
    if [[ $(stat -c '%a %u %g' -- "$dest") != "$(printf '%o' "$((8#$mode))") $uid $gid" ]]; then
      chown -- "$uid:$gid" "$dest"
      chmod -- "$mode" "$dest"
      PUT_CHANGED=1
    fi
    return 0
  fi
  mkdir -p -- "$(dirname -- "$dest")"
  # Written beside the target and renamed over it: a power cut leaves the old or the new file.
  local part
  part=$(dirname -- "$dest")/.$(basename -- "$dest").part
  install -m "$mode" -o "$uid" -g "$gid" -- "$src" "$part"
  mv -f -- "$part" "$dest"
  PUT_CHANGED=1
}

# put_dir DIR MODE UID GID
put_dir() {
  local dir=$1 mode=$2 uid=$3 gid=$4
  PUT_CHANGED=0
  if [[ ! -d $dir ]]; then
    mkdir -p -- "$dir"
    PUT_CHANGED=1
  fi
  if [[ $(stat -c '%a %u %g' -- "$dir") != "$(printf '%o' "$((8#$mode))") $uid $gid" ]]; then
    chown -- "$uid:$gid" "$dir"
    chmod -- "$mode" "$dir"
    PUT_CHANGED=1
  fi
}

report() {  # report WHAT: after put_*
  if ((PUT_CHANGED)); then changed "$1"; else unchanged "$1"; fi
}

live() {  # run a command that acts on the running system, only when ROOT is /
  if ((LIVE)); then "$@"; fi
}

have_systemd() { ((LIVE)) && [[ -d /run/systemd/system ]]; }

# --- install steps ---------------------------------------------------------------------------

step_packages() {
  if ((LIVE && APT)); then
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
      DEBIAN_FRONTEND=noninteractive apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
      changed "apt: ${missing[*]}"
    else
      unchanged "apt: ${APT_PACKAGES[*]}"
    fi
  fi
  local cmd
  for cmd in openssl mosquitto_passwd useradd groupadd systemctl flock; do
    command -v "$cmd" >/dev/null 2>&1 || die "missing command $cmd (Debian packages: ${APT_PACKAGES[*]})"
  done
  "$PYTHON" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null \
    || die "$PYTHON cannot make a virtual environment of Python >= 3.11 (Debian package python3-venv)"
  [[ -f $R/etc/passwd && -f $R/etc/group ]] || die "$R/etc/passwd or $R/etc/group is missing"
  [[ -n $(gid_of mosquitto) ]] \
    || die "no group mosquitto in $R/etc/group: is the Debian package mosquitto installed?"
  [[ -n $(gid_of dialout) ]] || die "no group dialout in $R/etc/group"
}

step_user() {
  if [[ -z $(gid_of "$NAME") ]]; then
    groupadd --root "$ROOT" --system "$NAME"
    changed "group $NAME"
  else
    unchanged "group $NAME"
  fi
  if [[ -z $(uid_of "$NAME") ]]; then
    # The shell check is the host's: a scratch root has no /usr/sbin/nologin of its own.
    useradd --root "$ROOT" --system --gid "$NAME" --groups dialout \
      --home-dir "/var/lib/$NAME" --no-create-home --shell /usr/sbin/nologin \
      --comment "Garden Gateway" "$NAME" 2> >(grep -v 'missing or non-executable shell' >&2)
    changed "user $NAME (groups $NAME, dialout)"
  elif ! in_group dialout "$NAME"; then
    usermod --root "$ROOT" --append --groups dialout "$NAME"
    changed "user $NAME added to dialout"
  else
    unchanged "user $NAME (groups $NAME, dialout)"
  fi
  GG_UID=$(uid_of "$NAME")
  GG_GID=$(gid_of "$NAME")
  MOSQ_GID=$(gid_of mosquitto)
}

# sync_tree SRC DEST: DEST's files become SRC's (root-owned, 0644 or 0755 when executable);
# files that SRC no longer has are removed with their compiled caches, so an upgrade that moves
# modules (gateway/app.py -> gateway/app/gateway.py) leaves no old module behind. Caches
# (__pycache__) are not copied; step_venv compiles them.
TREE_CHANGED=0
sync_tree() {
  local src=$1 dest=$2 rel mode updated=0 removed=0
  put_dir "$dest" 0755 0 0
  ((PUT_CHANGED)) && updated=$((updated + 1))
  while IFS= read -r -d '' rel; do
    rel=${rel#./}
    # A file (or a link) where the new tree has a folder: it goes first.
    if [[ -L $dest/$rel || (-e $dest/$rel && ! -d $dest/$rel) ]]; then
      rm -f -- "$dest/$rel"
      removed=$((removed + 1))
    fi
    put_dir "$dest/$rel" 0755 0 0
    ((PUT_CHANGED)) && updated=$((updated + 1))
  done < <(cd "$src" && find . -mindepth 1 -type d ! -name __pycache__ ! -path '*/__pycache__/*' -print0)
  while IFS= read -r -d '' rel; do
    rel=${rel#./}
    mode=0644
    [[ -x $src/$rel ]] && mode=0755
    # A folder (or a link to one) where the new tree has a file: mv would put the file into it.
    if [[ -d $dest/$rel ]]; then
      rm -rf -- "${dest:?}/$rel"
      removed=$((removed + 1))
    fi
    put_file "$src/$rel" "$dest/$rel" "$mode" 0 0
    ((PUT_CHANGED)) && updated=$((updated + 1))
  done < <(cd "$src" && find . -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' -print0)
  # What the checkout no longer has (and its compiled caches) goes.
  while IFS= read -r -d '' rel; do
    rel=${rel#./}
    if [[ ! -e $src/$rel ]]; then
      if [[ $rel == *.py ]]; then
        local stem
        stem=$(basename -- "$rel" .py)
        rm -f -- "$(dirname -- "$dest/$rel")/__pycache__/$stem".*.pyc
      fi
      rm -f -- "$dest/$rel"
      removed=$((removed + 1))
    fi
  done < <(cd "$dest" && find . -type f ! -path '*/__pycache__/*' -print0)
  while IFS= read -r -d '' rel; do
    rel=${rel#./}
    if [[ ! -d $src/$rel ]]; then
      rm -rf -- "${dest:?}/$rel"
      removed=$((removed + 1))
    fi
  done < <(cd "$dest" && find . -mindepth 1 -depth -type d ! -name __pycache__ ! -path '*/__pycache__/*' -print0)
  if ((updated || removed)); then
    changed "$dest ($updated written, $removed removed)"
    TREE_CHANGED=1
  else
    unchanged "$dest"
  fi
}

step_code() {
  [[ -f $FROM/pyproject.toml && -d $FROM/gateway ]] || die "--from $FROM: not a Garden Gateway checkout"
  FROM=$(realpath -- "$FROM")
  [[ $FROM != "$(realpath -m -- "$OPT")" ]] || die "--from is the installed copy itself; give the checkout"
  put_dir "$OPT" 0755 0 0
  report "$OPT"
  ((PUT_CHANGED)) && TREE_CHANGED=1
  local t f
  for t in "${TREES[@]}"; do
    [[ -d $FROM/$t ]] || die "--from $FROM: no $t/"
    sync_tree "$FROM/$t" "$OPT/$t"
  done
  for f in "${TOP_FILES[@]}"; do
    put_file "$FROM/$f" "$OPT/$f" 0644 0 0
    report "$OPT/$f"
    ((PUT_CHANGED)) && TREE_CHANGED=1
  done
  return 0
}

VENV_CHANGED=0
step_venv() {
  local pyver stamp_want
  pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  stamp_want="pyproject $(sha256sum < "$OPT/pyproject.toml" | cut -c1-64) python $pyver"
  local stamp=$VENV/garden-gateway.stamp
  # A venv whose interpreter is gone (Python upgraded by a Debian release upgrade) is rebuilt.
  if [[ -f $stamp && $(cat -- "$stamp") == "$stamp_want" ]] \
      && "$VENV/bin/python" -S -c '' 2>/dev/null; then
    unchanged "$VENV"
  else
    if ! "$VENV/bin/python" -S -c '' 2>/dev/null || [[ ! -f $stamp ]] \
        || [[ $(cat -- "$stamp") != *" python $pyver" ]]; then
      rm -rf -- "$VENV"
      "$PYTHON" -m venv "$VENV"
    fi
    # Editable: the code that runs is the copy in /opt/garden-gateway, with its pages and example
    # config beside it. No pip cache: nothing is installed twice on a Pi, and the card is small.
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
      --editable "$OPT"
    printf '%s\n' "$stamp_want" > "$stamp"
    changed "$VENV (pip install --editable $OPT)"
    VENV_CHANGED=1
  fi
  # Compiled once here: the service cannot write to /opt (ProtectSystem=strict), and compiling
  # at every start costs seconds on a Pi. compileall writes only what is out of date.
  "$VENV/bin/python" -m compileall -q "${TREES[@]/#/$OPT/}" >/dev/null \
    || die "compileall failed in $OPT"
}

LINK=$R/usr/local/bin/$NAME
LINK_TARGET=/opt/$NAME/.venv/bin/$NAME
step_link() {  # the command on root's PATH: sudo garden-gateway doctor
  if [[ -L $LINK && $(readlink -- "$LINK") == "$LINK_TARGET" ]]; then
    unchanged "$LINK"
  elif [[ -e $LINK || -L $LINK ]]; then
    say skipped "$LINK (something else is there; use $LINK_TARGET)"
  else
    mkdir -p -- "$(dirname -- "$LINK")"
    ln -s -- "$LINK_TARGET" "$LINK"
    changed "$LINK -> $LINK_TARGET"
  fi
}

step_config() {
  put_dir "$ETC" 0750 0 "$GG_GID"
  report "$ETC"
  local config=$ETC/config.yaml
  if [[ -e $config ]]; then
    unchanged "$config (present: kept as it is)"
  else
    put_file "$OPT/config/example.yaml" "$config" 0640 0 "$GG_GID"
    changed "$config (from config/example.yaml: edit it)"
  fi
}

secret_value() {  # secret_value KEY: the value in secrets.env (quotes taken off), or nothing
  sed -n "s/^$1=//p" "$ETC/secrets.env" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

step_secrets() {
  local secrets=$ETC/secrets.env
  # Read by systemd (EnvironmentFile=) as root, and by the group for tools run as the service
  # user; the service has these values in its environment anyway.
  if [[ ! -e $secrets ]]; then
    {
      echo "# Garden Gateway secrets: the service's environment (EnvironmentFile= in its unit)."
      echo "# Made by systemd/install.sh; it never changes this file once it exists."
      echo "# The operators' page and API: the token to type in (or send as Authorization: Bearer)."
      echo "GARDEN_GATEWAY_API__OPERATOR_TOKEN=$(openssl rand -hex 16)"
      echo "# The park's Mosquitto, user $MQTT_USER (in ${MOSQ_PASSWD#"$R"}). After changing it:"
      echo "#   sudo mosquitto_passwd ${MOSQ_PASSWD#"$R"} $MQTT_USER && sudo systemctl reload mosquitto"
      echo "GARDEN_GATEWAY_MQTT__PASSWORD=$(openssl rand -hex 16)"
      echo "# InfluxDB, when it asks for credentials:"
      echo "#GARDEN_GATEWAY_INFLUX__PASSWORD="
      echo "#GARDEN_GATEWAY_INFLUX__TOKEN="
    } > "$TMP/secrets.env"
    put_file "$TMP/secrets.env" "$secrets" 0640 0 "$GG_GID"
    changed "$secrets (new operator token and MQTT password)"
  else
    local added=()
    if [[ -z $(secret_value GARDEN_GATEWAY_API__OPERATOR_TOKEN) ]]; then
      echo "GARDEN_GATEWAY_API__OPERATOR_TOKEN=$(openssl rand -hex 16)" >> "$secrets"
      added+=(operator token)
    fi
    if [[ -z $(secret_value GARDEN_GATEWAY_MQTT__PASSWORD) ]]; then
      echo "GARDEN_GATEWAY_MQTT__PASSWORD=$(openssl rand -hex 16)" >> "$secrets"
      added+=(MQTT password)
    fi
    # Never readable by everyone, whoever made it.
    put_file "$secrets" "$secrets" 0640 0 "$GG_GID"
    if ((${#added[@]} || PUT_CHANGED)); then
      changed "$secrets (kept; added: ${added[*]:-nothing}; mode 0640 root:$NAME)"
    else
      unchanged "$secrets (present: kept as it is)"
    fi
  fi
}

step_data() {
  put_dir "$DATA" 0750 "$GG_UID" "$GG_GID"
  report "$DATA"
}

step_files() {
  put_file "$FROM/systemd/garden-gateway.service" "$UNIT" 0644 0 0
  report "$UNIT"
  UNIT_CHANGED=$PUT_CHANGED
  if ((UNIT_CHANGED)); then live systemctl daemon-reload; fi

  put_file "$FROM/systemd/99-garden-gateway-serial.rules" "$UDEV_RULE" 0644 0 0
  report "$UDEV_RULE"
  if ((PUT_CHANGED && LIVE)) && command -v udevadm >/dev/null 2>&1; then
    udevadm control --reload
    udevadm trigger --subsystem-match=tty --action=change
  fi

  put_file "$FROM/systemd/journald-garden-gateway.conf" "$JOURNALD" 0644 0 0
  report "$JOURNALD"
  if ((PUT_CHANGED)) && have_systemd; then systemctl restart systemd-journald; fi
}

# broker_accounts DEVICES_BEFORE: the accounts file (with the gateway's own account) and the
# ACL made from it, by the installed `garden-gateway devices sync`; on a fresh install (no
# device had an account before) the snippet that enforces the ACL. Where devices already have
# accounts, enforcing waits for the migration: `garden-gateway devices import`, `doctor`, then
# `garden-gateway devices enforce`. Sets BROKER_CHANGED when Mosquitto must read them again.
BROKER_CHANGED=0
broker_accounts() {
  local devices_before=$1 out wrote=0
  if ! out=$("$VENV/bin/garden-gateway" devices sync --config "$ETC/config.yaml" \
      --root "$ROOT" --no-reload 2>&1); then
    say skipped "$MOSQ_ACL ('garden-gateway devices sync' failed: ${out//$'\n'/ })"
    return 0
  fi
  [[ $out == *written* ]] && wrote=1
  put_file "$ACCOUNTS" "$ACCOUNTS" 0640 0 "$GG_GID"
  ((PUT_CHANGED)) && wrote=1
  put_file "$MOSQ_ACL" "$MOSQ_ACL" 0640 0 "$MOSQ_GID"
  ((PUT_CHANGED)) && wrote=1
  if ((wrote)); then
    changed "$MOSQ_ACL (from $ACCOUNTS)"
    BROKER_CHANGED=1
  else
    unchanged "$MOSQ_ACL (from $ACCOUNTS)"
  fi
  if [[ -e $MOSQ_ACL_CONF ]]; then
    unchanged "$MOSQ_ACL_CONF (present: the ACL is enforced)"
  elif ((devices_before)); then
    local then="'garden-gateway devices import', 'doctor', then 'garden-gateway devices enforce'"
    say skipped "$MOSQ_ACL_CONF (devices have accounts from before: $then)"
  else
    put_file "$FROM/config/mosquitto-garden-acl.conf" "$MOSQ_ACL_CONF" 0644 0 0
    changed "$MOSQ_ACL_CONF (the ACL is enforced)"
    BROKER_CHANGED=1
  fi
}

step_mosquitto() {
  local mosq_changed=0 devices_before=0
  # Did any device have an account before this run? Then the ACL is not enforced by us.
  if [[ -f $MOSQ_PASSWD ]] \
      && grep -v -e "^$MQTT_USER:" -e '^[[:space:]]*$' -e '^#' -- "$MOSQ_PASSWD" | grep -q .; then
    devices_before=1
  fi
  put_file "$FROM/config/mosquitto-garden.conf" "$MOSQ_CONF" 0644 0 0
  report "$MOSQ_CONF"
  mosq_changed=$PUT_CHANGED

  # The gateway's account; accounts a technician added for devices are left alone.
  local password
  password=$(secret_value GARDEN_GATEWAY_MQTT__PASSWORD)
  [[ -n $password ]] || die "no GARDEN_GATEWAY_MQTT__PASSWORD in $ETC/secrets.env"
  if [[ -f $MOSQ_PASSWD ]] && grep -q "^$MQTT_USER:" "$MOSQ_PASSWD"; then
    put_file "$MOSQ_PASSWD" "$MOSQ_PASSWD" 0640 0 "$MOSQ_GID"
    if ((PUT_CHANGED)); then
      changed "$MOSQ_PASSWD (mode 0640 root:mosquitto)"
    else
      unchanged "$MOSQ_PASSWD (has $MQTT_USER)"
    fi
  else
    [[ -f $MOSQ_PASSWD ]] && cp -p -- "$MOSQ_PASSWD" "$TMP/passwd"
    [[ -f $TMP/passwd ]] || : > "$TMP/passwd"
    mosquitto_passwd -b "$TMP/passwd" "$MQTT_USER" "$password"
    put_file "$TMP/passwd" "$MOSQ_PASSWD" 0640 0 "$MOSQ_GID"
    changed "$MOSQ_PASSWD (account $MQTT_USER)"
    mosq_changed=1
  fi
  broker_accounts "$devices_before"
  ((BROKER_CHANGED)) && mosq_changed=1
  # A new listener needs a restart (a reload does not open ports).
  if ((mosq_changed)) && have_systemd && systemctl is-enabled --quiet mosquitto.service; then
    systemctl restart mosquitto.service
  fi
}

step_enable() {
  if ((LIVE)); then
    if systemctl is-enabled --quiet "$NAME.service" 2>/dev/null; then
      unchanged "$NAME.service enabled"
    else
      systemctl enable --quiet "$NAME.service"
      changed "$NAME.service enabled"
    fi
  elif [[ $(systemctl --root="$ROOT" is-enabled "$NAME.service" 2>/dev/null) == enabled ]]; then
    unchanged "$NAME.service enabled (in $ROOT)"
  else
    # Offline: only the [Install] symlinks are made.
    systemctl --root="$ROOT" enable "$NAME.service" 2>&1 | grep -v 'non-existent unit' || true
    [[ $(systemctl --root="$ROOT" is-enabled "$NAME.service" 2>/dev/null) == enabled ]] \
      || die "systemctl --root=$ROOT enable $NAME.service did not enable it"
    changed "$NAME.service enabled (in $ROOT)"
  fi
}

step_start() {
  ((START)) || { say skipped "start (--no-start)"; return 0; }
  have_systemd || { ((LIVE)) && say skipped "start (systemd is not running here)"; return 0; }
  local why="did not start; 'journalctl -u $NAME -n 50' says why, 'sudo $NAME doctor --config /etc/$NAME/config.yaml' what to fix"
  if ! systemctl is-active --quiet "$NAME.service"; then
    systemctl start "$NAME.service" || die "$NAME.service $why"
    changed "$NAME.service started"
  elif ((TREE_CHANGED || VENV_CHANGED || UNIT_CHANGED)); then
    systemctl restart "$NAME.service" || die "$NAME.service $why"
    changed "$NAME.service restarted (new code or unit)"
  else
    unchanged "$NAME.service running"
  fi
}

do_install() {
  echo "Installing Garden Gateway from $FROM into $ROOT"
  step_packages
  step_user
  step_code
  step_venv
  step_link
  step_config
  step_secrets
  step_data
  step_files
  step_mosquitto
  step_enable
  step_start
  if ((CHANGES)); then
    echo "install: $CHANGES changed, $UNCHANGED unchanged"
  else
    echo "install: nothing changed ($UNCHANGED unchanged)"
  fi
  echo "next: edit ${ETC#"$R"}/config.yaml, then check it with" \
    "'sudo $NAME doctor --config ${ETC#"$R"}/config.yaml'"
}

# --- uninstall -------------------------------------------------------------------------------

remove() {  # remove PATH: a file or a tree
  if [[ -e $1 || -L $1 ]]; then
    rm -rf -- "$1"
    say removed "$1"
    CHANGES=$((CHANGES + 1))
    return 0
  fi
  say absent "$1"
  return 1
}

do_uninstall() {
  echo "Removing Garden Gateway from $ROOT"
  if [[ -e $UNIT ]]; then
    if ((LIVE)); then
      # Stopping lets the gateway deliver what it can of the spool (TimeoutStopSec).
      if have_systemd; then systemctl disable --now --quiet "$NAME.service" || true; fi
    else
      systemctl --root="$ROOT" disable --quiet "$NAME.service" 2>/dev/null || true
    fi
    say stopped "$NAME.service (disabled)"
  fi
  if remove "$UNIT" && have_systemd; then systemctl daemon-reload; fi
  if remove "$UDEV_RULE" && ((LIVE)) && command -v udevadm >/dev/null 2>&1; then
    udevadm control --reload
  fi
  if remove "$JOURNALD" && have_systemd; then systemctl restart systemd-journald; fi
  remove "$MOSQ_ACL_CONF" || true
  if remove "$MOSQ_CONF" && have_systemd && systemctl is-enabled --quiet mosquitto.service; then
    systemctl restart mosquitto.service
  fi
  remove "$OPT" || true
  if [[ -L $LINK && $(readlink -- "$LINK") == "$LINK_TARGET" ]]; then remove "$LINK" || true; fi
  if ((PURGE)); then
    remove "$ETC" || true
    remove "$DATA" || true
    remove "$MOSQ_PASSWD" || true
    remove "$MOSQ_ACL" || true
    if [[ -n $(uid_of "$NAME") ]]; then
      userdel --root "$ROOT" "$NAME"
      say removed "user $NAME"
    fi
    if [[ -n $(gid_of "$NAME") ]]; then
      groupdel --root "$ROOT" "$NAME"
      say removed "group $NAME"
    fi
  else
    local kept
    for kept in "$ETC" "$DATA" "$MOSQ_PASSWD" "$MOSQ_ACL"; do
      if [[ -e $kept ]]; then say kept "$kept"; fi
    done
    if [[ -n $(uid_of "$NAME") ]]; then say kept "user $NAME"; fi
    echo "uninstall: config, data (the spool) and the user are kept;" \
      "'uninstall --purge --yes' deletes them"
  fi
  return 0
}

case $ACTION in
  install) do_install ;;
  uninstall) do_uninstall ;;
esac
