import os

from django.core.wsgi import get_wsgi_application

from apps.ops.tracing import tracing_configure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")

# Traces when an OTLP endpoint is configured (nothing of OpenTelemetry is imported otherwise);
# before the application loads its middleware, which the Django instrumentation joins.
tracing_configure(role="web")

application = get_wsgi_application()

from apps.llm.calls import provider_sdks_import  # noqa: E402 - the apps are loaded now

provider_sdks_import()  # as the process starts, not during its first provider call

from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports every view module now, not in the first requests
