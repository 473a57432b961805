#!/bin/sh
# Reload nginx when its certificate changes: renewed by the acme service (compose.prod.yaml),
# replaced by cert-manager (Kubernetes), or copied in by hand. The official nginx image runs
# every executable /docker-entrypoint.d/*.sh before it starts nginx; this one leaves a check
# running in the background for as long as the container lives, so that no other container
# needs a way to signal nginx (no shared process namespace, no Docker socket).
#
# A change is handled like a start: the settings are derived again (OCSP stapling follows the
# new certificate), the templates rendered again, nginx tests the result, and only then reloads
# gracefully (new workers take new connections, the old ones finish their requests). What nginx
# refuses (a key that does not match its certificate yet, a half-copied file) is never loaded:
# the running configuration stays and the next check tries again.
#
# Settings: TLS_CERT_FILE, TLS_KEY_FILE, NGINX_CERT_CHECK_SECONDS (60). POSIX sh (busybox).

entrypoint_dir=$(dirname "$0")
interval=${NGINX_CERT_CHECK_SECONDS:-60}

case "$interval" in
    '' | *[!0-9]* | 0)
        echo "configuration error: NGINX_CERT_CHECK_SECONDS: must be a positive integer," \
            "got '$interval'" >&2
        exit 1
        ;;
esac

# Both files, so that a new key alone (or a new certificate alone) counts as a change.
fingerprint() {
    cat "$TLS_CERT_FILE" "$TLS_KEY_FILE" 2>/dev/null | sha256sum
}

render_and_reload() {
    (
        # shellcheck source=/dev/null  # (checked on its own)
        . "$entrypoint_dir/10-derive-settings.envsh" \
            && "$entrypoint_dir/20-envsubst-on-templates.sh" >/dev/null
    ) && nginx -t -q && nginx -s reload
}

watch_certificate() {
    loaded=$(fingerprint)
    while sleep "$interval"; do
        current=$(fingerprint)
        [ "$current" = "$loaded" ] && continue
        if render_and_reload; then
            loaded=$current
            echo "$0: the certificate changed; nginx reloaded"
        else
            echo "$0: the certificate changed, but nginx refused it; trying again in ${interval}s" >&2
        fi
    done
}

watch_certificate </dev/null &
