from __future__ import annotations

from agents.api.views import AgentViewSet
from hive_project.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("agents", AgentViewSet, basename="agent")

urlpatterns = router.urls
