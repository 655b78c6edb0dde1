from __future__ import annotations

from hive_project.routers import OptionalSlashRouter
from workflows.api.views import ExecutionViewSet, MCPServerViewSet, WorkflowViewSet

router = OptionalSlashRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")
router.register("mcp-servers", MCPServerViewSet, basename="mcp-server")

urlpatterns = router.urls
