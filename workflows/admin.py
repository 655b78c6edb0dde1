"""Workflows in the Django admin: import/export n8n JSON, versions, executions, MCP servers.

Saving goes through workflows.services, so the admin validates, versions and syncs
schedules exactly like the API. It enforces the API's rules too: staff change, delete
and see the webhook token of workflows they manage (Workflow.is_manageable_by), only
superusers register or change stdio MCP servers, and MCP command arguments and env
values are masked for everyone else. A changelist lookup (``?env__KEY__startswith=``) on a
value the user is shown masked or not at all is refused (400), since which rows it lists
would reveal the value.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from hive_project import jsonsafe
from hive_project.errors import ConflictError
from workflows import services
from workflows.models import MASK, Execution, MCPServer, NodeRun, Workflow, WorkflowVersion, is_workflow_admin

MAX_IMPORT_BYTES = 5 * 1024 * 1024


def _touches(lookup: str, fields: tuple[str, ...]) -> bool:
    """Whether a changelist lookup (``env__API_KEY__startswith``) filters on one of ``fields``.

    A filter or search on a value the user is shown masked answers yes/no questions about it
    (one character at a time), so such lookups are refused like any lookup Django disallows.
    """
    parts = lookup.split(LOOKUP_SEP)
    return any(parts[:len(path)] == path for path in (field.split(LOOKUP_SEP) for field in fields))


def _search_field_name(field: str) -> str:
    """``^name``, ``=slug``, ``@body`` -> the lookup path they search."""
    return field.lstrip("^=@")


class WorkflowForm(forms.ModelForm):
    """Validated by the engine before anything is stored (errors name node and parameter)."""

    class Meta:
        model = Workflow
        fields = ["name", "description", "active", "n8n_data", "shared_with_groups"]

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
            data = jsonsafe.loads(upload.read().decode("utf-8"))
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

    # Fields only those who manage the workflow may see (the webhook token is the webhook's only secret).
    secret_fields = ("webhook_token",)

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if _touches(lookup, self.secret_fields) and not is_workflow_admin(getattr(request, "user", None)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = list(super().get_search_fields(request))
        if is_workflow_admin(request.user):
            return fields
        return [f for f in fields if not _touches(_search_field_name(f), self.secret_fields)]

    def has_change_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return super().has_change_permission(request, obj) and (obj is None or obj.is_manageable_by(request.user))

    def has_delete_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or obj.is_manageable_by(request.user))

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not obj.is_manageable_by(request.user):
            fields.remove("webhook_token")  # the token is the webhook's only secret
        if obj is not None and not obj.is_shareable_by(request.user):
            fields.append("shared_with_groups")
        return fields

    def save_model(self, request: HttpRequest, obj: Workflow, form: forms.ModelForm, change: bool) -> None:
        data = {key: form.cleaned_data[key] for key in ("name", "description", "active", "n8n_data")
                if key in form.cleaned_data}
        if "shared_with_groups" in form.cleaned_data:
            data["shared_with_groups"] = [group.name for group in form.cleaned_data["shared_with_groups"]]
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
        # Django's "delete selected" checks the model permission only, not each object.
        if queryset.exclude(pk__in=Workflow.objects.manageable_by(request.user).values("pk")).exists():
            raise PermissionDenied
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
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate selected workflows", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        self._set_active(request, queryset, False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[Workflow], active: bool) -> None:
        managed = list(queryset.manageable_by(request.user))  # type: ignore[attr-defined]
        for workflow in managed:
            services.set_active(workflow, active)
        self.message_user(request, f"{len(managed)} workflow(s) {'activated' if active else 'deactivated'}.")
        skipped = queryset.count() - len(managed)
        if skipped:
            self.message_user(request, f"{skipped} workflow(s) skipped: you may change only your own workflows and "
                                       "those shared with one of your groups.", messages.WARNING)


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

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        secret = tuple(f"workflow__{field}" for field in WorkflowAdmin.secret_fields)
        if _touches(lookup, secret) and not is_workflow_admin(getattr(request, "user", None)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workflows.cancel_execution")

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        done, skipped = 0, []
        managed = queryset.filter(workflow__in=Workflow.objects.manageable_by(request.user).values("pk"))
        if managed.count() != queryset.count():
            skipped.append(f"{queryset.count() - managed.count()} execution(s) skipped: you may cancel only "
                           "executions of workflows you may change.")
        for execution in managed:
            try:
                services.cancel_execution(execution)
                done += 1
            except ConflictError as exc:
                skipped.append(f"{execution.pk}: {exc}")
        self.message_user(request, f"{done} execution(s) cancelled (or cancelling).")
        for line in skipped:
            self.message_user(request, line, messages.WARNING)


class MCPServerForm(forms.ModelForm):
    """The model's clean() (allowlist, transport rules) runs in _post_clean; the stdio rule needs the user."""

    user: Any = None  # set by MCPServerAdmin.get_form

    class Meta:
        model = MCPServer
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        previous = MCPServer.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        candidate = MCPServer(transport=cleaned.get("transport") or "")
        try:
            candidate.check_change_allowed(self.user, previous)
        except PermissionDenied as exc:
            raise ValidationError(str(exc)) from None
        given = [key for key in ("command", "env") if key in self.fields]
        for key in given:
            if key in cleaned:
                setattr(candidate, key, cleaned[key])
        candidate.check_transport_change(previous, given)
        return cleaned

    def _update_errors(self, errors: ValidationError) -> None:
        # The model's clean() may name command or env, which are no form fields for
        # non-superusers (e.g. an HTTP server stored with a command before that was refused):
        # report those as errors of the whole form instead of failing on an unknown field.
        if hasattr(errors, "error_dict"):
            hidden = [key for key in errors.error_dict if key != NON_FIELD_ERRORS and key not in self.fields]
            if hidden:
                moved = {key: value for key, value in errors.error_dict.items() if key not in hidden}
                moved.setdefault(NON_FIELD_ERRORS, [])
                for key in hidden:
                    moved[NON_FIELD_ERRORS] = [*moved[NON_FIELD_ERRORS],
                                               *(ValidationError(f"{key}: {message}")
                                                 for message in ValidationError(errors.error_dict[key]).messages)]
                errors = ValidationError(moved)
        super()._update_errors(errors)


@admin.register(MCPServer)
class MCPServerAdmin(admin.ModelAdmin):
    form = MCPServerForm
    list_display = ["name", "transport", "status", "tool_count", "version", "last_checked"]
    list_filter = ["status", "transport"]
    search_fields = ["name", "description"]
    readonly_fields = ["tools", "version", "status", "last_error_shown", "last_checked", "created_at"]
    exclude = ["last_error"]
    actions = ["check_now"]

    # Shown masked to everyone but superusers: no filter or search on them either.
    masked_fields = ("command", "env")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        user = getattr(request, "user", None)
        if _touches(lookup, self.masked_fields) and not (user is not None and user.is_superuser):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = list(super().get_search_fields(request))
        if request.user.is_superuser:
            return fields
        return [f for f in fields if not _touches(_search_field_name(f), self.masked_fields)]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        shown = "command_clear" if request.user.is_superuser else "command_masked"
        return [*self.list_display[:2], shown, *self.list_display[2:]]

    def get_readonly_fields(self, request: HttpRequest, obj: MCPServer | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else [*fields, "command_masked", "env_masked"]

    def get_exclude(self, request: HttpRequest, obj: MCPServer | None = None) -> list[str]:
        # Non-superusers never get command/env as form fields (a form field shows its value
        # in clear): they see masked read-only values and cannot set either.
        excluded = list(super().get_exclude(request, obj) or [])
        return excluded if request.user.is_superuser else [*excluded, "command", "env"]

    def get_form(self, request: HttpRequest, obj: MCPServer | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user = request.user
        if not request.user.is_superuser and "transport" in form.base_fields:
            form.base_fields["transport"].choices = [(MCPServer.Transport.HTTP.value, MCPServer.Transport.HTTP.label)]
        return form

    def has_change_permission(self, request: HttpRequest, obj: MCPServer | None = None) -> bool:
        if obj is not None and obj.transport == MCPServer.Transport.STDIO and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    @admin.display(description="Command")
    def command_clear(self, server: MCPServer) -> str:
        return " ".join(str(arg) for arg in server.command or [])

    @admin.display(description="Command")
    def command_masked(self, server: MCPServer) -> str:
        return " ".join(str(arg) for arg in server.masked_command())

    @admin.display(description="Env")
    def env_masked(self, server: MCPServer) -> str:
        return ", ".join(f"{key}={MASK}" for key in server.masked_env()) or "-"

    @admin.display(description="Last error")
    def last_error_shown(self, server: MCPServer) -> str:
        return server.redact(server.last_error or "") or "-"  # also rows stored before it was redacted

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
