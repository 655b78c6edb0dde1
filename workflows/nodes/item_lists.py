"""n8n-nodes-base.itemLists (v1, v2.x, v3, v3.1): the legacy bundle of the Transform operations.

Item Lists predates the separate Sort / Limit / Remove Duplicates / Split Out / Aggregate /
Summarize nodes; it runs the same operations, but v1/v2 name fields through fixed collections
(``{"fields": [{"fieldName": "a"}]}``) and split out arrays only, while v3 takes comma lists and
splits like the Split Out node. v3.1 orders mixed types by type when removing duplicates.
"""
from __future__ import annotations

from typing import Any

from workflows.engine.contract import Item, Items, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.nodes.transform import (
    DOT_NOTATION_HINT,
    UNDEFINED,
    aggregate_all_item_data,
    aggregate_individual_fields,
    as_bool,
    field_name_list,
    js_string,
    limit_items,
    lodash_unset,
    param,
    prepare_fields_array,
    remove_duplicate_items,
    sort_items,
    split_by_param,
    split_fields_param,
    split_out_item,
    summarize_items,
    to_json_value,
    value_getter,
)

OPERATIONS = ("splitOutItems", "aggregateItems", "concatenateItems", "removeDuplicates", "sort", "limit", "summarize")


def _legacy(version: float) -> bool:
    return version < 3


def _split_out_legacy(ctx: NodeContext, items: Items) -> Items:
    """v1/v2 'Split Out Items': the field must be an array; objects are merged into the new item."""
    output: Items = []
    for i, item in enumerate(items):
        field = js_string(ctx.param("fieldToSplitOut", i, ""))
        disable_dot = as_bool(param(ctx, "options.disableDotNotation", False, 0))
        destination = js_string(param(ctx, "options.destinationFieldName", "", i) or "")
        include = param(ctx, "include", "noOtherFields", i)
        get_value = value_getter(disable_dot)
        array = get_value(item["json"], field)
        if array is UNDEFINED:
            description = DOT_NOTATION_HINT if "." in field and disable_dot else None
            raise NodeError(f"Couldn't find the field '{field}' in the input data", description=description,
                            item_index=i, node=ctx.node.name)
        if not isinstance(array, list):
            raise NodeError(f"The provided field '{field}' is not an array", item_index=i, node=ctx.node.name)
        for element in array:
            new_json: dict[str, Any] = {}
            if include == "selectedOtherFields":
                selected = field_name_list(param(ctx, "fieldsToInclude", {}, i))
                if not selected:
                    raise NodeError("No fields specified", description="Please add a field to include", item_index=i,
                                    node=ctx.node.name)
                for name in selected:
                    if name != field:
                        new_json[name] = get_value(item["json"], name)
            elif include == "allOtherFields":
                for name in item["json"]:
                    new_json[name] = get_value(item["json"], name)
                lodash_unset(new_json, field)
            if isinstance(element, (dict, list)) or element is None:
                if include == "noOtherFields" and destination == "":
                    if isinstance(element, dict):
                        new_json = {**new_json, **element}
                    elif isinstance(element, list):
                        new_json = {**new_json, **{str(k): v for k, v in enumerate(element)}}
                else:
                    new_json[destination or field] = element
            else:
                new_json[destination or field] = element
            output.append({"json": to_json_value(new_json), "pairedItem": {"item": i}})
    return output


def _split_out_v3(ctx: NodeContext, items: Items) -> Items:
    output: Items = []
    for i, item in enumerate(items):
        fields = split_fields_param(ctx.param("fieldToSplitOut", i, ""))
        destinations = [f.strip() for f in js_string(param(ctx, "options.destinationFieldName", "", i) or "").split(",")
                        if f.strip()]
        output.extend(split_out_item(
            ctx, item, i, fields=fields, destinations=destinations,
            include=param(ctx, "include", "noOtherFields", i),
            fields_to_include=lambda i=i: prepare_fields_array(param(ctx, "fieldsToInclude", "", i), "Fields To Include",
                                                               ctx.node.name),
            disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False, 0)),
            include_binary=False, allow_binary=False,
        ))
    return output


def _aggregate(ctx: NodeContext, items: Items, version: float) -> Items:
    mode = param(ctx, "aggregate", "aggregateIndividualFields")
    if mode == "aggregateIndividualFields":
        fields = param(ctx, "fieldsToAggregate.fieldToAggregate", [])
        result = aggregate_individual_fields(
            ctx, items, fields if isinstance(fields, list) else [],
            disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False)),
            merge_lists=as_bool(param(ctx, "options.mergeLists", False)),
            keep_missing=as_bool(param(ctx, "options.keepMissing", False)),
            require_found=True,
        )
        new_item: Item = {"json": result, "pairedItem": [{"item": i} for i in range(len(items))]}
        return [new_item]
    destination = js_string(param(ctx, "destinationFieldName", "data"))
    if _legacy(version):
        to_exclude = field_name_list(param(ctx, "fieldsToExclude", {}))
        to_include = field_name_list(param(ctx, "fieldsToInclude", {}))
    else:
        include = param(ctx, "include", "allFields")
        to_exclude = prepare_fields_array(param(ctx, "fieldsToExclude", ""), "Fields To Exclude", ctx.node.name) \
            if include == "allFieldsExcept" else []
        to_include = prepare_fields_array(param(ctx, "fieldsToInclude", ""), "Fields To Include", ctx.node.name) \
            if include == "specifiedFields" else []
    data, paired = aggregate_all_item_data([i["json"] for i in items], to_include, to_exclude)
    return [{"json": {destination: data}, "pairedItem": [{"item": p} for p in paired]}]


def _remove_duplicates(ctx: NodeContext, items: Items, version: float) -> Items:
    if _legacy(version):
        to_exclude = field_name_list(param(ctx, "fieldsToExclude", {}))
        to_compare = field_name_list(param(ctx, "fieldsToCompare", {}))
    else:
        to_exclude = prepare_fields_array(param(ctx, "fieldsToExclude", ""), "Fields To Exclude", ctx.node.name)
        to_compare = prepare_fields_array(param(ctx, "fieldsToCompare", ""), "Fields To Compare", ctx.node.name)
    return remove_duplicate_items(
        ctx, items,
        compare=param(ctx, "compare", "allFields"),
        fields_to_exclude=to_exclude, fields_to_compare=to_compare,
        disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False)),
        remove_other_fields=as_bool(param(ctx, "options.removeOtherFields", False)),
        type_rank=version >= 3.1, check_types=version < 3.1,
    )


@register
class ItemListsNode(Node):
    """n8n-nodes-base.itemLists: split out, aggregate, dedupe, sort, limit or summarize items."""

    type = "n8n-nodes-base.itemLists"
    versions = (1, 2, 2.1, 2.2, 3, 3.1)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        operation = node.parameters.get("operation", "splitOutItems")
        if isinstance(operation, str) and not operation.startswith("=") and operation not in OPERATIONS:
            issues.append(ValidationIssue(f"unknown operation '{operation}'", node.name, "operation"))
        resource = node.parameters.get("resource", "itemList")
        if resource != "itemList":
            issues.append(ValidationIssue(f"unknown resource '{resource}'", node.name, "resource"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        version = float(ctx.node.type_version)
        operation = param(ctx, "operation", "splitOutItems")
        if operation == "splitOutItems":
            return [_split_out_legacy(ctx, items) if _legacy(version) else _split_out_v3(ctx, items)]
        if operation in ("aggregateItems", "concatenateItems"):
            return [_aggregate(ctx, items, version)]
        if operation == "removeDuplicates":
            return [_remove_duplicates(ctx, items, version)]
        if operation == "sort":
            sort_type = param(ctx, "type", "simple")
            return [sort_items(
                ctx, items, sort_type=sort_type,
                sort_fields=(param(ctx, "sortFieldsUi", {}) or {}).get("sortField") if sort_type == "simple" else None,
                code=param(ctx, "code", "") if sort_type == "code" else None,
                disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False)),
            )]
        if operation == "limit":
            return [limit_items(ctx, items, param(ctx, "maxItems", 1), param(ctx, "keep", "firstItems"))]
        if operation == "summarize":
            options = param(ctx, "options", {}) or {}
            return [summarize_items(
                ctx, items,
                fields=param(ctx, "fieldsToSummarize.values", []),
                split_by=split_by_param(param(ctx, "fieldsToSplitBy", "")),
                options=options if isinstance(options, dict) else {},
                version=1,
            )]
        raise NodeError(f"Operation '{operation}' is not recognized", node=ctx.node.name)
