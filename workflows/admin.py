"""Workflows in the Django admin: import/export n8n JSON, versions, executions, MCP servers.

Saving goes through workflows.services, so the admin validates, versions and syncs
schedules exactly like the API.
"""
from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from hive_project.errors import ConflictError
from workflows import services
from workflows.models import Execution, MCPServer, NodeRun, Workflow, WorkflowVersion

MAX_IMPORT_BYTES = 5 * 1024 * 1024


class WorkflowForm(forms.ModelForm):
    """Validated by the engine before anything is stored (errors name node and parameter)."""

    class Meta:
        model = Workflow
        fields = ["name", "description", "active", "n8n_data"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        fields = {k: cleaned[k] for k in ("name", "description", "n8n_data") if k in cleaned}
        if self.errors:
            return cleaned
        try:
            services.clean(dict(fields))
        except services.InvalidWorkflow as exc:
            raise ValidationError([str(issue) for issue in exc.issues]) from None
        return cleaned


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A workflow exported from n8n (Download / Export), or Hive's own export.")
    name = forms.CharField(required=False, max_length=255, help_text="Optional: overrides the name in the file.")
    active = forms.BooleanField(required=False, initial=True)

    def clean_file(self) -> dict[str, Any]:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise ValidationError(f"The file is {upload.size} bytes; the limit is {MAX_IMPORT_BYTES} bytes.")
        try:
            data = json.loads(upload.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationError(f"The file is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValidationError("The file must hold one workflow (a JSON object with nodes and connections).")
        return data


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    max_num = 0
    can_delete = False
    fields = ["version", "name", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["-version"]
    show_change_link = False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["name", "version", "active", "last_execution", "executions_link", "updated_at"]
    list_filter = ["active"]
    search_fields = ["name", "slug", "description"]
    readonly_fields = ["slug", "version", "webhook_token", "mcp_tools", "created_by", "created_at", "updated_at"]
    inlines = [VersionInline]
    actions = ["export_json", "activate", "deactivate"]
    change_list_template = "admin/workflows/workflow/change_list.html"
    change_form_template = "admin/workflows/workflow/change_form.html"

    def get_urls(self) -> list[Any]:
        own = [
            path("import/", self.admin_site.admin_view(self.import_view), name="workflows_workflow_import"),
            path("<uuid:pk>/export/", self.admin_site.admin_view(self.export_view), name="workflows_workflow_export"),
        ]
        return own + super().get_urls()

    @admin.display(description="Last execution")
    def last_execution(self, workflow: Workflow) -> str:
        last = workflow.executions.order_by("-created_at").first()
        if last is None:
            return "-"
        url = reverse("admin:workflows_execution_change", args=[last.pk])
        return format_html('<a href="{}">{} ({})</a>', url, last.status, last.created_at.strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="Executions")
    def executions_link(self, workflow: Workflow) -> str:
        url = reverse("admin:workflows_execution_changelist") + f"?workflow__id__exact={workflow.pk}"
        return format_html('<a href="{}">{}</a>', url, workflow.executions.count())

    def save_model(self, request: HttpRequest, obj: Workflow, form: forms.ModelForm, change: bool) -> None:
        data = {key: form.cleaned_data[key] for key in ("name", "description", "active", "n8n_data")
                if key in form.cleaned_data}
        if change:
            saved = services.update_workflow(Workflow.objects.get(pk=obj.pk), data, request.user, partial=True)
        else:
            saved = services.create_workflow(data, request.user)
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        """Versions are written by the service; the inline is read-only (nothing to save)."""
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def delete_model(self, request: HttpRequest, obj: Workflow) -> None:
        services.delete_workflow(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            services.delete_workflow(workflow)

    # --- import / export ------------------------------------------------------------

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        issues: list[str] = []
        if request.method == "POST":
            form = ImportForm(request.POST, request.FILES)
            if form.is_valid():
                data = form.cleaned_data["file"]
                body = ({k: data[k] for k in ("name", "description", "n8n_data") if k in data}
                        if "n8n_data" in data else dict(data))
                if form.cleaned_data["name"]:
                    body["name"] = form.cleaned_data["name"]
                try:
                    workflow = services.create_workflow(body, request.user)
                except services.InvalidWorkflow as exc:
                    issues = [str(issue) for issue in exc.issues]
                else:
                    if not form.cleaned_data["active"] and workflow.active:
                        workflow = services.set_active(workflow, False)
                    self.message_user(request, f"Imported '{workflow.name}' (version {workflow.version}).")
                    return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
        else:
            form = ImportForm()
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "issues": issues,
                   "title": "Import n8n JSON"}
        return TemplateResponse(request, "admin/workflows/workflow/import.html", context)

    def export_view(self, request: HttpRequest, pk: Any) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        workflow = get_object_or_404(Workflow, pk=pk)
        return _download(services.export_workflow(workflow), workflow.slug)

    @admin.action(description="Export selected as n8n JSON")
    def export_json(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> HttpResponse:
        workflows = list(queryset)
        if len(workflows) == 1:
            return _download(services.export_workflow(workflows[0]), workflows[0].slug)
        return _download([services.export_workflow(w) for w in workflows], "workflows")

    @admin.action(description="Activate selected workflows (schedules and webhooks run)", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            services.set_active(workflow, True)
        self.message_user(request, f"{queryset.count()} workflow(s) activated.")

    @admin.action(description="Deactivate selected workflows", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            services.set_active(workflow, False)
        self.message_user(request, f"{queryset.count()} workflow(s) deactivated.")


def _download(data: Any, stem: str) -> HttpResponse:
    response = JsonResponse(data, safe=False, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{stem}.json"'
    return response


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    extra = 0
    max_num = 0
    can_delete = False
    fields = ["sequence", "node_name", "node_type", "run_index", "status", "error", "task", "duration_ms", "started_at"]
    readonly_fields = fields
    ordering = ["sequence"]


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "workflow_version", "mode", "status", "created_at", "completed_at", "error_node"]
    list_filter = ["status", "mode", "workflow"]
    search_fields = ["id", "workflow__name", "error_message"]
    readonly_fields = ["workflow", "workflow_version", "mode", "status", "input_data", "output_data", "error_message",
                       "error_node", "cancel_requested", "parent", "created_by", "worker", "created_at", "started_at",
                       "completed_at", "n8n_data"]
    inlines = [NodeRunInline]
    actions = ["cancel"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("workflow")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workflows.cancel_execution")

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        done, skipped = 0, []
        for execution in queryset:
            try:
                services.cancel_execution(execution)
                done += 1
            except ConflictError as exc:
                skipped.append(f"{execution.pk}: {exc}")
        self.message_user(request, f"{done} execution(s) cancelled (or cancelling).")
        for line in skipped:
            self.message_user(request, line, messages.WARNING)


@admin.register(MCPServer)
class MCPServerAdmin(admin.ModelAdmin):
    list_display = ["name", "transport", "status", "tool_count", "version", "last_checked"]
    list_filter = ["status", "transport"]
    search_fields = ["name", "description"]
    readonly_fields = ["tools", "version", "status", "last_error", "last_checked", "created_at"]
    actions = ["check_now"]

    @admin.display(description="Tools")
    def tool_count(self, server: MCPServer) -> int:
        return len(server.tools or [])

    def has_check_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workflows.change_mcpserver")

    @admin.action(description="Check now (connect and list tools)", permissions=["check"])
    def check_now(self, request: HttpRequest, queryset: QuerySet[MCPServer]) -> None:
        from workflows.mcp_bridge import check_server

        for server in queryset:
            check_server(server)
            server.refresh_from_db()
            if server.status == MCPServer.Status.ACTIVE:
                self.message_user(request, f"{server.name}: active, {len(server.tools)} tool(s).")
            else:
                self.message_user(request, f"{server.name}: {server.status}: {server.last_error}", messages.WARNING)
