#!/bin/sh
# test-units.sh: the systemd units, D-Bus activation files, sysusers.d and tmpfiles.d entries carry
# the keys issue 7 requires; systemd-analyze verify / systemd-sysusers / systemd-tmpfiles accept them
# where they can run here (in a container they often cannot: those parts then say so and are skipped).
. "$top_srcdir/tests/sysint-common.sh"

unit="$top_builddir/units/hymbad.service"
uunit="$top_builddir/units/user/hymbad.service"
sysact="$top_builddir/units/system-services/org.hymba.Assistant1.service"
sesact="$top_builddir/units/session-services/org.hymba.Assistant1.service"
for f in "$unit" "$uunit" "$sysact" "$sesact"; do
    [ -f "$f" ] || { fail "$f was not generated"; finish test-units; }
    if grep -n '@[a-z_]*@' "$f"; then fail "$f: unsubstituted @variable@"; fi
done

# The system unit.
require_key "$unit" Type notify
require_key "$unit" BusName org.hymba.Assistant1
require_key "$unit" ExecStart "$HYMBA_SBINDIR/hymbad"
require_key "$unit" User hymba
require_key "$unit" StateDirectory hymba
require_key "$unit" StateDirectoryMode 0700
require_key "$unit" ConfigurationDirectory hymba
require_key "$unit" ProtectSystem strict
require_key "$unit" ProtectHome yes
require_key "$unit" PrivateTmp yes
require_key "$unit" NoNewPrivileges yes
require_key "$unit" RestrictAddressFamilies AF_UNIX
require_key "$unit" DevicePolicy closed
require_key "$unit" DeviceAllow "char-nvidiactl rw"
require_key "$unit" DeviceAllow "char-nvidia rw"
require_key "$unit" DeviceAllow "char-nvidia-uvm rw"
forbid_key "$unit" MemoryDenyWriteExecute "the CUDA driver JIT maps pages it has written"
forbid_key "$unit" PrivateDevices "it hides /dev/nvidia*"
forbid_key "$unit" DynamicUser "the state directory belongs to the static user hymba"
# Every DeviceAllow= is a CUDA device group, nothing broader.
key_value "$unit" DeviceAllow | while read -r dev mode; do
    case "$dev" in
        char-nvidia|char-nvidiactl|char-nvidia-frontend|char-nvidia-uvm) ;;
        *) echo "FAIL: DeviceAllow=$dev $mode is not a CUDA device" >&2; exit 1 ;;
    esac
done || fail "hymbad.service allows a device CUDA does not need"
grep -q 'MemoryDenyWriteExecute' "$unit" || fail "hymbad.service: no comment on why MemoryDenyWriteExecute is unset"

# The user unit.
require_key "$uunit" Type notify
require_key "$uunit" BusName org.hymba.Assistant1
require_key "$uunit" ExecStart "$HYMBA_SBINDIR/hymbad --user"
forbid_key "$uunit" User "a user unit runs as its user"

# Activation files: the system one goes through systemd as user hymba.
require_key "$sysact" Name org.hymba.Assistant1
require_key "$sysact" Exec "$HYMBA_SBINDIR/hymbad"
require_key "$sysact" User hymba
require_key "$sysact" SystemdService hymbad.service
require_key "$sesact" Name org.hymba.Assistant1
require_key "$sesact" Exec "$HYMBA_SBINDIR/hymbad --user"
require_key "$sesact" SystemdService hymbad.service
for f in "$sysact" "$sesact"; do
    head -n 5 "$f" | grep -qx '\[D-BUS Service\]' || fail "$f: no [D-BUS Service] group"
done

# systemd-analyze verify: ExecStart= must name an existing program, so the copies checked here
# point at the built hymbad (or /bin/true before the daemon is built).
daemon="$top_builddir/daemon/hymbad"
[ -x "$daemon" ] || daemon=/bin/true
mkdir -p "$sysint_tmp/sys" "$sysint_tmp/user" "$sysint_tmp/xdg"
chmod 700 "$sysint_tmp/xdg"
sed "s|^ExecStart=$HYMBA_SBINDIR/hymbad|ExecStart=$daemon|" "$unit" >"$sysint_tmp/sys/hymbad.service"
sed "s|^ExecStart=$HYMBA_SBINDIR/hymbad|ExecStart=$daemon|" "$uunit" >"$sysint_tmp/user/hymbad.service"
printf '[Service]\nExecStart=/bin/true\n' >"$sysint_tmp/probe.service"
# Documentation= names man pages: verify looks them up with man(1), here in a tree of our own pages.
for page in "$top_srcdir"/man/*.[1-8]; do
    [ -f "$page" ] || continue
    sec=${page##*.}
    mkdir -p "$sysint_tmp/man/man$sec"
    ln -sf "$page" "$sysint_tmp/man/man$sec/"
done
manopt="--man=no"
if command -v man >/dev/null && [ -d "$sysint_tmp/man" ]; then
    manopt="--man=yes"
else
    echo "note: man(1) not installed: Documentation= pages not looked up"
fi
export MANPATH="$sysint_tmp/man"
if ! command -v systemd-analyze >/dev/null; then
    echo "note: systemd-analyze not installed: only the keys were checked"
elif ! systemd-analyze verify "$sysint_tmp/probe.service" >/dev/null 2>&1; then
    echo "note: systemd-analyze verify cannot run here: only the keys were checked"
else
    # verify warns (unknown key, bad value) on stderr yet exits 0: any output is a failure.
    out=$(systemd-analyze verify "$manopt" "$sysint_tmp/sys/hymbad.service" 2>&1) || fail "systemd-analyze verify (system): exit $?"
    [ -z "$out" ] || fail "systemd-analyze verify (system unit): $out"
    if XDG_RUNTIME_DIR="$sysint_tmp/xdg" systemd-analyze --user verify "$sysint_tmp/probe.service" >/dev/null 2>&1; then
        out=$(XDG_RUNTIME_DIR="$sysint_tmp/xdg" systemd-analyze --user verify "$manopt" "$sysint_tmp/user/hymbad.service" 2>&1) ||
            fail "systemd-analyze --user verify: exit $?"
        [ -z "$out" ] || fail "systemd-analyze --user verify (user unit): $out"
    else
        echo "note: systemd-analyze --user verify cannot run here: user unit keys checked only"
    fi
    # The exact hardening level, for the log (systemd's own exposure score; lower is better).
    systemd-analyze security --offline=true "$sysint_tmp/sys/hymbad.service" 2>/dev/null | tail -n 1 || true
fi

# Type=notify is right only if hymbad says READY=1: run it against a stand-in notification socket.
if daemon_usable; then
    "$top_builddir/tests/sysint-notify-wait" "$sysint_tmp/notify" 60 >"$sysint_tmp/notify.out" 2>&1 &
    wait_pid=$!
    wait_for_socket "$sysint_tmp/notify" || fail "the stand-in notify socket did not appear"
    if daemon_start NOTIFY_SOCKET="$sysint_tmp/notify"; then
        wait "$wait_pid" || fail "hymbad sent no READY=1 (Type=notify would time out): $(cat "$sysint_tmp/notify.out")"
        grep -q '^STATUS=' "$sysint_tmp/notify.out" || fail "hymbad sent no STATUS= line"
        kill "$daemon_pid"
        wait "$daemon_pid" || fail "hymbad did not exit 0 on SIGTERM: $(cat "$sysint_tmp/hymbad.log")"
    else
        kill "$wait_pid" 2>/dev/null
        wait "$wait_pid" 2>/dev/null
    fi
else
    echo "note: hymbad or dbus-daemon missing: READY=1 not checked"
fi

# sysusers.d: creates the static system user hymba, home /var/lib/hymba, no login shell.
sysusers="$top_srcdir/units/sysusers.d/hymba.conf"
if command -v systemd-sysusers >/dev/null; then
    mkdir -p "$sysint_tmp/root/etc"
    if systemd-sysusers --root="$sysint_tmp/root" "$sysusers" >"$sysint_tmp/sysusers.log" 2>&1; then
        line=$(grep '^hymba:' "$sysint_tmp/root/etc/passwd")
        [ -n "$line" ] || fail "systemd-sysusers created no user hymba"
        uid=$(echo "$line" | cut -d: -f3)
        [ -n "$uid" ] && [ "$uid" -lt 1000 ] || fail "hymba is not a system user (uid $uid)"
        [ "$(echo "$line" | cut -d: -f6)" = /var/lib/hymba ] || fail "hymba's home is not /var/lib/hymba: $line"
        grep -q '^hymba:' "$sysint_tmp/root/etc/group" || fail "systemd-sysusers created no group hymba"
        # tmpfiles.d resolves hymba in the same root: the directories come out 0700 hymba:hymba.
        if systemd-tmpfiles --root="$sysint_tmp/root" --create "$top_srcdir/units/tmpfiles.d/hymba.conf" \
                >"$sysint_tmp/tmpfiles.log" 2>&1; then
            for d in var/lib/hymba var/cache/hymba; do
                [ "$(stat -c %a "$sysint_tmp/root/$d" 2>/dev/null)" = 700 ] || fail "tmpfiles: /$d not mode 0700"
                [ "$(stat -c %u "$sysint_tmp/root/$d" 2>/dev/null)" = "$uid" ] || fail "tmpfiles: /$d not owned by hymba"
            done
        else
            echo "note: systemd-tmpfiles --root cannot run here: $(head -n 1 "$sysint_tmp/tmpfiles.log")"
        fi
    else
        echo "note: systemd-sysusers --root cannot run here: $(head -n 1 "$sysint_tmp/sysusers.log")"
    fi
else
    grep -qE '^u[[:space:]]+hymba[[:space:]]' "$sysusers" || fail "sysusers.d/hymba.conf declares no user hymba"
fi

finish test-units
