#!/usr/bin/env bash
# Entrypoint for every Hive container (web, workers, beat, flower).
#
# Only the web process, and only when HIVE_MIGRATE=true, prepares the database before
# starting: `migrate`, then `ensure_setup` (roles and periodic schedules; idempotent).
# Workers and beat wait for web to report healthy (compose depends_on), so they never
# run against a schema that is still being migrated, and exactly one process migrates.
#
# Every container starts with an empty PROMETHEUS_MULTIPROC_DIR: prometheus_client
# sums every *.db file there into /metrics, so files left by the processes of a
# previous start (same container restarted, or a directory that is not the tmpfs
# docker-compose.yml mounts) would be counted again.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'hive-entrypoint: %s\n' "$*" >&2; }

# Same spellings as hive_project.env.env_bool, so HIVE_MIGRATE=ture stops the
# container instead of silently skipping the migrations.
parse_bool() {
    local name="$1" value="${2:-}"
    case "${value,,}" in
        true | 1 | yes | on) echo true ;;
        false | 0 | no | off | "") echo false ;;
        *)
            log "$name=$value is not a boolean; use true or false"
            exit 64
            ;;
    esac
}

# The web role is the ASGI server: `uvicorn ...`, `python -m uvicorn ...` (the image's
# default CMD), or daphne.
is_web_command() {
    local server="${1:-}"
    if [[ "$server" == python* && "${2:-}" == "-m" ]]; then
        server="${3:-}"
    fi
    case "${server##*/}" in
        uvicorn | daphne) return 0 ;;
        *) return 1 ;;
    esac
}

# Only prometheus_client's own files (counter_<pid>.db, histogram_<pid>.db, ...), and
# never in "/", so a mistyped path cannot wipe anything else.
reset_metrics_dir() {
    local dir="${PROMETHEUS_MULTIPROC_DIR:-}"
    [[ -n "$dir" && "$dir" != "/" ]] || return 0
    if [[ -d "$dir" ]]; then
        find "$dir" -maxdepth 1 -type f -name '*.db' -delete
    else
        mkdir -p "$dir"
    fi
}

migrate="$(parse_bool HIVE_MIGRATE "${HIVE_MIGRATE:-}")" || exit $?

if [[ $# -eq 0 ]]; then
    log "no command given"
    exit 64
fi

reset_metrics_dir

if [[ "$migrate" == true ]]; then
    if is_web_command "$@"; then
        log "applying migrations"
        python "$APP_DIR/manage.py" migrate --noinput
        log "ensuring roles and periodic schedules"
        python "$APP_DIR/manage.py" ensure_setup
    else
        log "HIVE_MIGRATE is ignored: only the web process migrates"
    fi
fi

exec "$@"
