"""Settings shared by every environment, assembled from one module per concern."""

import django_stubs_ext

from .accounts import *  # noqa: F403
from .api import *  # noqa: F403
from .cache import *  # noqa: F403
from .celery import *  # noqa: F403
from .core import *  # noqa: F403
from .database import *  # noqa: F403
from .jobs import *  # noqa: F403
from .llm import *  # noqa: F403
from .logging import *  # noqa: F403
from .outbound import *  # noqa: F403
from .security import *  # noqa: F403
from .sso import *  # noqa: F403
from .stripe import *  # noqa: F403
from .tenancy import *  # noqa: F403
from .workflows import *  # noqa: F403

# Lets `admin.ModelAdmin[Model]` and friends be subscripted at run time, as the type stubs expect.
django_stubs_ext.monkeypatch()
