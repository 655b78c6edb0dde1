"""Hive settings: every knob comes from the environment (see README "Configuration").

Defaults give the embedded mode: SQLite and an embedded Redis on a unix socket under
``./var/``. ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and an external
Redis; ``HIVE_MODE=production`` makes the secret key mandatory and refuses DEBUG.
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from hive_project import queues
from hive_project.env import env_bool, env_choice, env_float, env_int, env_list, env_rate, env_str
from hive_project.redis_urls import broker_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("HIVE_VAR_DIR", str(BASE_DIR / "var"))).resolve()

HIVE_MODE = env_choice("HIVE_MODE", "embedded", ("embedded", "production"))
DEBUG = env_bool("HIVE_DEBUG", False)


def _key(name: str, filename: str) -> str:
    configured = env_str(name, None)
    if configured:
        return configured
    if HIVE_MODE == "production":
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) is required when HIVE_MODE=production")
    # Embedded mode: one random key per installation, kept under var/ so sessions
    # and JWTs survive a restart.
    path = VAR_DIR / filename
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _key("HIVE_SECRET_KEY", "secret_key")
# JWTs have a key of their own: whoever learns one secret cannot forge the other.
HIVE_JWT_SIGNING_KEY = _key("HIVE_JWT_SIGNING_KEY", "jwt_signing_key")
if HIVE_JWT_SIGNING_KEY == SECRET_KEY:
    raise ImproperlyConfigured("HIVE_JWT_SIGNING_KEY must differ from HIVE_SECRET_KEY")
if HIVE_MODE == "production" and DEBUG:
    raise ImproperlyConfigured("HIVE_DEBUG=true is refused when HIVE_MODE=production")

ALLOWED_HOSTS = env_list("HIVE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("HIVE_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "channels",
    "hive_project",
    "agents",
    "coordinator",
    "monitoring",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "monitoring.middleware.RequestMetricsMiddleware",
    "hive_project.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hive_project.urls"
ASGI_APPLICATION = "hive_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "hive_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
_database_url = env_str("DATABASE_URL", "")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url)}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "hive.sqlite3",
                             "TEST": {"NAME": VAR_DIR / "test.sqlite3"}}}
# Workers and beat keep connections, checked before use (the ASGI web process is run
# with 0, as Django advises; see runhive and compose).
DATABASES["default"]["CONN_MAX_AGE"] = env_int("HIVE_DB_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, several workers and beat share one file: WAL lets readers run beside
    # the writer, IMMEDIATE transactions take the write lock up front instead of
    # failing half-way with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, cache, channel layer, locks ------------------------------
REDIS_URL = env_str("REDIS_URL", f"unix://{VAR_DIR / 'redis.sock'}?db=0")
HIVE_EMBEDDED_REDIS = not bool(env_str("REDIS_URL", ""))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hive",
    }
}
# Redis pub/sub: a group_send is one PUBLISH, and each web process receives it once
# and hands it to its local subscribers in memory, instead of one Redis list push and
# pop per subscriber. Delivery is at most once either way; events carry a sequence
# number and gaps are refilled from the topic's log (coordinator/events.py).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "hive:asgi"},
    }
}

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = broker_url(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = queues.CONTROL
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Celery's Django fixup closes every database connection before and after every task
# unless this is set: a new connection per task (a TCP connect and a new PostgreSQL
# backend, or reopening the SQLite file). Set, the fixup recycles them only after this
# many tasks, and Hive applies Django's own CONN_MAX_AGE and health check before every
# task instead (hive_project.celery).
CELERY_DB_REUSE_MAX = 1000
HIVE_TASK_TIME_LIMIT = env_int("HIVE_TASK_TIME_LIMIT", 1800, minimum=10)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Must exceed the longest task time limit, or Redis redelivers a message
    # whose task is still running.
    "visibility_timeout": env_int("HIVE_VISIBILITY_TIMEOUT", 3600, minimum=60),
}

if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= HIVE_TASK_TIME_LIMIT + 30:
    raise ImproperlyConfigured(
        f"HIVE_VISIBILITY_TIMEOUT ({CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']}s) must exceed the task "
        f"time limit plus its grace ({HIVE_TASK_TIME_LIMIT + 30}s), or Redis redelivers tasks that are still running."
    )

# --- Scheduling and execution ----------------------------------------------
HIVE_TASK_LEASE_SECONDS = env_int("HIVE_TASK_LEASE_SECONDS", 20, minimum=3)
HIVE_MAX_ATTEMPTS = env_int("HIVE_MAX_ATTEMPTS", 3, minimum=1)
HIVE_PLACEMENT = env_choice("HIVE_PLACEMENT", "warm_first", ("warm_first", "least_busy", "round_robin"))
# Priority points a pending task gains per minute of waiting, so low-priority work
# cannot starve: at 0.25 a priority-1 task outranks a fresh priority-5 one after 16 min.
HIVE_AGING_PER_MINUTE = env_float("HIVE_AGING_PER_MINUTE", 0.25, minimum=0.0)
HIVE_CIRCUIT_FAILURES = env_int("HIVE_CIRCUIT_FAILURES", 3, minimum=1)
HIVE_PROBE_BACKOFF_SECONDS = env_float("HIVE_PROBE_BACKOFF_SECONDS", 5.0, minimum=0.1)
HIVE_PROBE_BACKOFF_MAX_SECONDS = env_float("HIVE_PROBE_BACKOFF_MAX_SECONDS", 300.0, minimum=1.0)
# Estimates used when nothing has been measured yet.
HIVE_DEFAULT_TOKENS = env_int("HIVE_DEFAULT_TOKENS", 256, minimum=1)
HIVE_DEFAULT_TPS = env_float("HIVE_DEFAULT_TPS", 20.0, minimum=0.1)
HIVE_DEFAULT_LOAD_SECONDS = env_float("HIVE_DEFAULT_LOAD_SECONDS", 5.0, minimum=0.0)
# How long Ollama keeps a model loaded after Hive used it (its default keep-alive).
HIVE_KEEP_ALIVE_SECONDS = env_int("HIVE_KEEP_ALIVE_SECONDS", 300, minimum=0)
# Send up to this many tasks per agent beyond its slots when a slot is expected to
# free within HIVE_QUEUE_AHEAD_SECONDS: they wait in Ollama's queue, so a finishing
# task's slot starts the next one at once instead of after a scheduling round trip.
HIVE_QUEUE_AHEAD = env_int("HIVE_QUEUE_AHEAD", 1, minimum=0)
HIVE_QUEUE_AHEAD_SECONDS = env_float("HIVE_QUEUE_AHEAD_SECONDS", 1.0, minimum=0.0)
# An execution that finishes starts the task the last scheduling round reserved for
# its agent's slot, in the same worker process, for up to this many seconds after
# its message arrived (coordinator.handoff). A handed-off task runs under what is left
# of the message's time limit, so this is capped at a quarter of HIVE_TASK_TIME_LIMIT.
# 0: every task goes through a round and a message of its own.
HIVE_HANDOFF_SECONDS = min(env_float("HIVE_HANDOFF_SECONDS", 10.0, minimum=0.0), HIVE_TASK_TIME_LIMIT / 4)
HIVE_QUEUED_REDISPATCH_SECONDS = env_int("HIVE_QUEUED_REDISPATCH_SECONDS", 600, minimum=2)
HIVE_SCHEDULER_INTERVAL = env_float("HIVE_SCHEDULER_INTERVAL", 5.0, minimum=0.5)
HIVE_PASS_INTERVAL = env_float("HIVE_PASS_INTERVAL", 0.05, minimum=0.0)
HIVE_RECONCILE_INTERVAL = env_float("HIVE_RECONCILE_INTERVAL", 10.0, minimum=1.0)
HIVE_HEALTH_INTERVAL = env_float("HIVE_HEALTH_INTERVAL", 30.0, minimum=1.0)
HIVE_HEALTH_TIMEOUT = env_float("HIVE_HEALTH_TIMEOUT", 1.0, minimum=0.1)
HIVE_HEALTH_CONCURRENCY = env_int("HIVE_HEALTH_CONCURRENCY", 100, minimum=1)
HIVE_HEALTH_RETENTION_DAYS = env_float("HIVE_HEALTH_RETENTION_DAYS", 7.0, minimum=0.01)
HIVE_CLEANUP_INTERVAL = env_float("HIVE_CLEANUP_INTERVAL", 3600.0, minimum=10.0)
HIVE_ALERT_INTERVAL = env_float("HIVE_ALERT_INTERVAL", 30.0, minimum=1.0)
HIVE_ALERT_WEBHOOK_URL = env_str("HIVE_ALERT_WEBHOOK_URL", "")
# A bearer token for Prometheus to scrape /metrics with (people use their own login).
HIVE_METRICS_TOKEN = env_str("HIVE_METRICS_TOKEN", "")
# prometheus_client's multiprocess mode: every process writes its counters here and
# /metrics sums them. Emptied at start-up by runhive (and the container entrypoint).
PROMETHEUS_MULTIPROC_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus")))
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
HIVE_ALERT_RETENTION_DAYS = env_float("HIVE_ALERT_RETENTION_DAYS", 30.0, minimum=0.01)
HIVE_OLLAMA_CONNECT_TIMEOUT = env_float("HIVE_OLLAMA_CONNECT_TIMEOUT", 3.0, minimum=0.1)
HIVE_OLLAMA_READ_TIMEOUT = env_float("HIVE_OLLAMA_READ_TIMEOUT", 300.0, minimum=1.0)
HIVE_PROBE_TIMEOUT = env_float("HIVE_PROBE_TIMEOUT", 5.0, minimum=0.1)
HIVE_MAX_BODY_BYTES = env_int("HIVE_MAX_BODY_BYTES", 1_048_576, minimum=1024)
# Deepest nesting of arrays/objects any JSON input may have (REST, webhooks, WebSocket frames).
HIVE_MAX_JSON_DEPTH = env_int("HIVE_MAX_JSON_DEPTH", 200, minimum=10)
# Caps on Ollama's num_predict / num_ctx options (-1 and -2 for num_predict are capped too).
HIVE_MAX_NUM_PREDICT = env_int("HIVE_MAX_NUM_PREDICT", 32768, minimum=1)
HIVE_MAX_NUM_CTX = env_int("HIVE_MAX_NUM_CTX", 131072, minimum=256)
DATA_UPLOAD_MAX_MEMORY_SIZE = HIVE_MAX_BODY_BYTES

# --- Events ---------------------------------------------------------------
HIVE_EVENT_RETENTION = env_int("HIVE_EVENT_RETENTION", 1000, minimum=10)
HIVE_EVENT_RETENTION_SECONDS = env_int("HIVE_EVENT_RETENTION_SECONDS", 86400, minimum=60)
HIVE_PROGRESS_INTERVAL = env_float("HIVE_PROGRESS_INTERVAL", 0.1, minimum=0.01)
# cluster.status snapshots: at most one per this many seconds, covering every change in it.
HIVE_STATUS_INTERVAL = env_float("HIVE_STATUS_INTERVAL", 0.25, minimum=0.0)
HIVE_WS_MAX_CONNECTIONS_PER_USER = env_int("HIVE_WS_MAX_CONNECTIONS_PER_USER", 20, minimum=1)
# How often an open WebSocket re-checks its user and token (revoked, deactivated, role lost).
HIVE_WS_RECHECK_SECONDS = env_float("HIVE_WS_RECHECK_SECONDS", 10.0, minimum=0.1)

# --- Workflows ------------------------------------------------------------
HIVE_WORKFLOW_TIMEZONE = env_str("HIVE_WORKFLOW_TIMEZONE", "America/New_York")
HIVE_WORKFLOW_JS_TIMEOUT_MS = env_int("HIVE_WORKFLOW_JS_TIMEOUT_MS", 5000, minimum=10)
HIVE_WORKFLOW_JS_MEMORY_MB = env_int("HIVE_WORKFLOW_JS_MEMORY_MB", 64, minimum=8)
HIVE_WORKFLOW_PYTHON_ENABLED = env_bool("HIVE_WORKFLOW_PYTHON_ENABLED", True)
HIVE_WORKFLOW_PYTHON_TIMEOUT = env_float("HIVE_WORKFLOW_PYTHON_TIMEOUT", 10.0, minimum=0.1)
HIVE_WORKFLOW_PYTHON_MEMORY_MB = env_int("HIVE_WORKFLOW_PYTHON_MEMORY_MB", 256, minimum=32)
HIVE_WORKFLOW_HTTP_TIMEOUT = env_float("HIVE_WORKFLOW_HTTP_TIMEOUT", 30.0, minimum=0.1)
HIVE_WORKFLOW_HTTP_MAX_BYTES = env_int("HIVE_WORKFLOW_HTTP_MAX_BYTES", 10 * 1024 * 1024, minimum=1024)
# Hosts, IPs or CIDRs the HTTP Request node may reach although they are loopback,
# link-local or private (public addresses are always allowed).
# An entry is a host, IP or CIDR (every port) or one of those with ":port".
HIVE_WORKFLOW_HTTP_ALLOW = env_list("HIVE_WORKFLOW_HTTP_ALLOW", [])
# Webhook calls allowed per workflow and per client IP ("N/s", "N/min", "N/hour").
HIVE_WEBHOOK_RATE_PER_WORKFLOW = env_rate("HIVE_WEBHOOK_RATE_PER_WORKFLOW", "120/min")
# Per address across all workflows, so above the per-workflow rate: one sender may use a
# workflow's whole allowance; it still stops floods and token guessing (tokens are 32+ chars).
HIVE_WEBHOOK_RATE_PER_IP = env_rate("HIVE_WEBHOOK_RATE_PER_IP", "600/min")
# Executables a stdio MCP server may run (basenames or absolute paths); empty: any, for superusers.
HIVE_MCP_STDIO_ALLOWED = env_list("HIVE_MCP_STDIO_ALLOWED", [])
HIVE_WORKFLOW_MAX_NODE_RUNS = env_int("HIVE_WORKFLOW_MAX_NODE_RUNS", 10_000, minimum=10)
HIVE_WORKFLOW_MAX_WAIT_SECONDS = env_float("HIVE_WORKFLOW_MAX_WAIT_SECONDS", 3600.0, minimum=0.0)
HIVE_EXECUTION_RETENTION_DAYS = env_float("HIVE_EXECUTION_RETENTION_DAYS", 30.0, minimum=0.01)

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hive_project.auth.ApiTokenAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["hive_project.permissions.RoleModelPermissions"],
    "DEFAULT_THROTTLE_CLASSES": [
        "hive_project.throttling.RoleRateThrottle",
        "hive_project.throttling.ActionRateThrottle",
    ],
    "DEFAULT_PARSER_CLASSES": ["hive_project.parsers.SafeJSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_PAGINATION_CLASS": "hive_project.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hive_project.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Throttles identify anonymous clients by REMOTE_ADDR: X-Forwarded-For is the
    # client's to write, so trusting it would let anyone pick a fresh identity per call.
    "NUM_PROXIES": 0,
}
HIVE_THROTTLE_RATES = {
    "admin": env_rate("HIVE_THROTTLE_ADMIN", "2000/min"),
    "developer": env_rate("HIVE_THROTTLE_DEVELOPER", "600/min"),
    "viewer": env_rate("HIVE_THROTTLE_VIEWER", "300/min"),
}
# The seed's per-endpoint limits (per minute). A role missing here falls back to
# its general rate above; permissions, not throttles, forbid a role an action.
HIVE_ACTION_THROTTLE_RATES = {
    "agents.register": {"admin": env_rate("HIVE_THROTTLE_AGENTS_REGISTER_ADMIN", "10/min")},
    "tasks.create": {
        "admin": env_rate("HIVE_THROTTLE_TASKS_CREATE_ADMIN", "600/min"),
        "developer": env_rate("HIVE_THROTTLE_TASKS_CREATE_DEVELOPER", "300/min"),
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("HIVE_JWT_ACCESS_MINUTES", 60, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("HIVE_JWT_REFRESH_DAYS", 7, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "TOKEN_OBTAIN_SERIALIZER": "hive_project.auth.HiveTokenObtainPairSerializer",
    "SIGNING_KEY": HIVE_JWT_SIGNING_KEY,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hive API",
    "DESCRIPTION": "Run a cluster of Ollama GPU nodes as one system.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "hive_project.schema.add_error_responses",
    ],
}

# --- Static files, i18n -----------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
WHITENOISE_USE_FINDERS = HIVE_MODE == "embedded"
if HIVE_MODE == "embedded":
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
                    if HIVE_MODE == "production" else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/accounts/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("HIVE_LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

if HIVE_MODE == "production":
    SESSION_COOKIE_SECURE = env_bool("HIVE_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("HIVE_SECURE_COOKIES", True)
