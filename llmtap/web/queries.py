"""Every SQL statement the web dashboard runs, with its parameters.

Values from a request travel only as ClickHouse query parameters (``{name:Type}``), which the
server parses as typed literals: they can never become SQL. The few identifiers chosen by a
request (the cost breakdown's group-by column) come from the fixed maps below, never from the
request text. Tables whose rows are re-emitted with a higher version (ReplacingMergeTree) are
read with FINAL so a window or alert counts once. Times cross the API as Unix milliseconds and
are compared with ``fromUnixTimestamp64Milli`` so the server's time zone never matters.

Every statement filters on ``{tenant:String}`` (empty: every tenant). The server sets it from
the caller's token, so a tenant token reads its own rows only; it checks each query it runs
names that parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bucket widths for time series, smallest first: a range is split into at most MAX_BUCKETS.
BUCKET_SECONDS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS = 240
MAX_RANGE_DAYS = 400
HISTOGRAM_BINS = 20

# Cost breakdown dimensions: request name -> column of llm_aggregates.
COST_DIMENSIONS = {
    "service": "service_name",
    "tenant": "tenant",
    "prompt_version": "prompt_template_version",
    "model": "request_model",
    "provider": "provider",
    "environment": "environment",
    "operation": "operation",
}
# Per-user costs live in their own table (llm_user_aggregates).
USER_DIMENSION = "user"
GROUP_BY_CHOICES = (*COST_DIMENSIONS, USER_DIMENSION)


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [start, end) in Unix milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError("the range ends before it starts")
        if self.end_ms - self.start_ms > MAX_RANGE_DAYS * 86_400_000:
            raise ValueError(f"the range is longer than {MAX_RANGE_DAYS} days")

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000

    def step_seconds(self, minimum: int = 0) -> int:
        """The narrowest bucket that splits the range into at most MAX_BUCKETS."""
        for step in BUCKET_SECONDS:
            if step >= minimum and self.seconds / step <= MAX_BUCKETS:
                return step
        return BUCKET_SECONDS[-1]

    def parameters(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "end_ms": self.end_ms}


@dataclass(frozen=True)
class Filters:
    """Optional equality filters; an empty string means "any"."""

    service: str = ""
    tenant: str = ""
    model: str = ""

    def parameters(self) -> dict[str, Any]:
        return {"service": self.service, "tenant": self.tenant, "model": self.model}


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)


def _in_range(column: str) -> str:
    return (
        f"{column} >= fromUnixTimestamp64Milli({{start_ms:Int64}}) "
        f"AND {column} < fromUnixTimestamp64Milli({{end_ms:Int64}})"
    )


_FILTERS = (
    "({service:String} = '' OR service_name = {service:String}) "
    "AND ({tenant:String} = '' OR tenant = {tenant:String}) "
    "AND ({model:String} = '' OR request_model = {model:String})"
)
_TENANT_FILTER = "({tenant:String} = '' OR tenant = {tenant:String})"
_BUCKET = "toStartOfInterval({column}, toIntervalSecond({{step:UInt32}}))"


def _bucket_ms(column: str) -> str:
    return f"toUnixTimestamp({_BUCKET.format(column=column)}) * 1000"


# -- overview (llm_spans) ------------------------------------------------------------------------

_OVERVIEW_SERIES = f"""
SELECT
    {_bucket_ms("timestamp")} AS bucket_ms,
    count() AS spans,
    countIf(span_type = 'llm') AS llm_calls,
    countIf(status = 'error') AS errors,
    sum(ifNull(input_tokens, 0)) AS input_tokens,
    sum(ifNull(output_tokens, 0)) AS output_tokens,
    quantileIf(0.5)(duration_ms, span_type = 'llm') AS p50_ms,
    quantileIf(0.95)(duration_ms, span_type = 'llm') AS p95_ms,
    toFloat64(sum(ifNull(cost_total, 0))) AS cost,
    countIf(span_type = 'llm' AND priced = 0) AS unpriced_calls
FROM llm_spans FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
GROUP BY bucket_ms
ORDER BY bucket_ms
LIMIT 10000
"""  # noqa: S608 (only constants are interpolated; values are query parameters)

_OVERVIEW_TOTALS = f"""
SELECT
    count() AS spans,
    countIf(span_type = 'llm') AS llm_calls,
    countIf(status = 'error') AS errors,
    sum(ifNull(input_tokens, 0)) AS input_tokens,
    sum(ifNull(output_tokens, 0)) AS output_tokens,
    quantileIf(0.5)(duration_ms, span_type = 'llm') AS p50_ms,
    quantileIf(0.95)(duration_ms, span_type = 'llm') AS p95_ms,
    toFloat64(sum(ifNull(cost_total, 0))) AS cost,
    countIf(span_type = 'llm' AND priced = 0) AS unpriced_calls,
    -- qualified: the bare names are the aliases above
    sumIf(
        ifNull(llm_spans.input_tokens, 0) + ifNull(llm_spans.output_tokens, 0),
        span_type = 'llm' AND priced = 0
    ) AS unpriced_tokens,
    uniqExact(trace_id) AS traces
FROM llm_spans FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
"""  # noqa: S608

_COST_BY_MODEL = f"""
SELECT
    {_bucket_ms("timestamp")} AS bucket_ms,
    toString(request_model) AS model,
    toFloat64(sum(ifNull(cost_total, 0))) AS cost
FROM llm_spans FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS} AND span_type = 'llm'
GROUP BY bucket_ms, model
ORDER BY bucket_ms, model
LIMIT 20000
"""  # noqa: S608

_UNPRICED_REASONS = f"""
SELECT
    toString(unpriced_reason) AS reason,
    toString(request_model) AS model,
    count() AS calls,
    sum(ifNull(input_tokens, 0) + ifNull(output_tokens, 0)) AS tokens
FROM llm_spans FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS} AND span_type = 'llm' AND priced = 0
GROUP BY reason, model
ORDER BY calls DESC
LIMIT 20
"""  # noqa: S608


def overview_series(time_range: TimeRange, filters: Filters) -> Query:
    parameters = {**time_range.parameters(), **filters.parameters()}
    return Query(_OVERVIEW_SERIES, {**parameters, "step": time_range.step_seconds()})


def overview_totals(time_range: TimeRange, filters: Filters) -> Query:
    return Query(_OVERVIEW_TOTALS, {**time_range.parameters(), **filters.parameters()})


def cost_by_model(time_range: TimeRange, filters: Filters) -> Query:
    parameters = {**time_range.parameters(), **filters.parameters()}
    return Query(_COST_BY_MODEL, {**parameters, "step": time_range.step_seconds(minimum=60)})


def unpriced_reasons(time_range: TimeRange, filters: Filters) -> Query:
    return Query(_UNPRICED_REASONS, {**time_range.parameters(), **filters.parameters()})


# -- cost breakdown (llm_aggregates, llm_user_aggregates) ----------------------------------------

# The aggregates hold several window lengths (1 minute, 1 hour); read the longest one that still
# fits the chart's bucket, so a week is summed from hours and an hour from minutes.
_WINDOW_CHOICE = (
    "(SELECT if(countIf(window_seconds <= {{step:UInt32}}) > 0, "
    "maxIf(window_seconds, window_seconds <= {{step:UInt32}}), min(window_seconds)) "
    "FROM {table} WHERE {time} AND {tenant})"
)


def _window_choice(table: str) -> str:
    return _WINDOW_CHOICE.format(table=table, time=_in_range("window_start"), tenant=_TENANT_FILTER)


def _cost_source(group_by: str) -> tuple[str, str, str]:
    """(table, key column, filter) of a group-by choice; ValueError for an unknown one."""
    if group_by == USER_DIMENSION:
        return "llm_user_aggregates", "user_id", _TENANT_FILTER
    if group_by not in COST_DIMENSIONS:
        raise ValueError(f"unknown group_by {group_by!r}; known: {', '.join(GROUP_BY_CHOICES)}")
    return "llm_aggregates", COST_DIMENSIONS[group_by], _FILTERS


def cost_breakdown(time_range: TimeRange, filters: Filters, group_by: str, limit: int) -> Query:
    table, key, where = _cost_source(group_by)
    sql = f"""
SELECT
    toString({key}) AS key,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(unpriced_requests) AS unpriced_requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    toFloat64(sum(cost_total)) AS cost
FROM {table} FINAL
WHERE {_in_range("window_start")} AND {where}
    AND window_seconds = {_window_choice(table)}
GROUP BY key
ORDER BY cost DESC, requests DESC, key
LIMIT {{limit:UInt32}}
"""  # noqa: S608 (table and key come from the fixed maps above)
    return Query(
        sql,
        {
            **time_range.parameters(),
            **filters.parameters(),
            "step": time_range.step_seconds(minimum=60),
            "limit": limit,
        },
    )


def cost_series(time_range: TimeRange, filters: Filters, group_by: str, keys: list[str]) -> Query:
    """Cost per bucket of the given keys (the breakdown's top ones); the rest as 'other'."""
    table, key, where = _cost_source(group_by)
    sql = f"""
SELECT
    {_bucket_ms("window_start")} AS bucket_ms,
    if(has({{keys:Array(String)}}, toString({key})), toString({key}), '(other)') AS key,
    toFloat64(sum(cost_total)) AS cost,
    sum(requests) AS requests
FROM {table} FINAL
WHERE {_in_range("window_start")} AND {where}
    AND window_seconds = {_window_choice(table)}
GROUP BY bucket_ms, key
ORDER BY bucket_ms, key
LIMIT 20000
"""  # noqa: S608 (table and key come from the fixed maps above)
    return Query(
        sql,
        {
            **time_range.parameters(),
            **filters.parameters(),
            "step": time_range.step_seconds(minimum=60),
            "keys": keys,
        },
    )


# -- drift (drift_results) and alerts ------------------------------------------------------------

_DRIFT_RESULTS = f"""
SELECT
    toUnixTimestamp(window_start) * 1000 AS window_start_ms,
    toUnixTimestamp(window_end) * 1000 AS window_end_ms,
    toString(tenant) AS tenant,
    toString(service_name) AS service_name,
    toString(request_model) AS request_model,
    toString(prompt_template_version) AS prompt_template_version,
    toString(feature) AS feature,
    toString(detector) AS detector,
    statistic,
    p_value,
    threshold,
    drifted,
    reference_size,
    current_size,
    substring(evidence, 1, 20000) AS evidence
FROM drift_results FINAL
WHERE {_in_range("window_end")} AND {_FILTERS}
ORDER BY window_end DESC, feature, detector
LIMIT {{limit:UInt32}}
"""  # noqa: S608

_ALERTS = f"""
SELECT
    toUnixTimestamp64Milli(fired_at) AS fired_at_ms,
    if(isNull(resolved_at), NULL, toUnixTimestamp64Milli(assumeNotNull(resolved_at)))
        AS resolved_at_ms,
    toString(tenant) AS tenant,
    toString(rule_id) AS rule_id,
    toString(severity) AS severity,
    toString(state) AS state,
    group_key,
    labels,
    value,
    threshold,
    message,
    toString(delivery_status) AS delivery_status,
    delivery_attempts,
    delivery_error,
    dedup_key
FROM alerts FINAL
WHERE {_in_range("fired_at")} AND {_TENANT_FILTER}
    AND ({{state:String}} = '' OR state = {{state:String}})
    AND ({{severity:String}} = '' OR severity = {{severity:String}})
    AND ({{rule:String}} = '' OR positionCaseInsensitiveUTF8(rule_id, {{rule:String}}) > 0)
ORDER BY fired_at DESC
LIMIT {{limit:UInt32}}
"""  # noqa: S608

_ALERT_SERIES = f"""
SELECT
    {_bucket_ms("fired_at")} AS bucket_ms,
    countIf(severity = 'critical') AS critical,
    countIf(severity = 'warning') AS warning,
    countIf(severity NOT IN ('critical', 'warning')) AS info
FROM alerts FINAL
WHERE {_in_range("fired_at")} AND {_TENANT_FILTER}
    AND ({{state:String}} = '' OR state = {{state:String}})
    AND ({{severity:String}} = '' OR severity = {{severity:String}})
    AND ({{rule:String}} = '' OR positionCaseInsensitiveUTF8(rule_id, {{rule:String}}) > 0)
GROUP BY bucket_ms
ORDER BY bucket_ms
LIMIT 10000
"""  # noqa: S608


def drift_results(time_range: TimeRange, filters: Filters, limit: int) -> Query:
    return Query(
        _DRIFT_RESULTS, {**time_range.parameters(), **filters.parameters(), "limit": limit}
    )


def alerts(
    time_range: TimeRange,
    filters: Filters,
    *,
    state: str = "",
    severity: str = "",
    rule: str = "",
    limit: int,
) -> Query:
    parameters = {
        **time_range.parameters(),
        "tenant": filters.tenant,
        "state": state,
        "severity": severity,
        "rule": rule,
    }
    return Query(_ALERTS, {**parameters, "limit": limit})


def alert_series(
    time_range: TimeRange, filters: Filters, *, state: str = "", severity: str = "", rule: str = ""
) -> Query:
    parameters = {
        **time_range.parameters(),
        "tenant": filters.tenant,
        "state": state,
        "severity": severity,
        "rule": rule,
        "step": time_range.step_seconds(minimum=60),
    }
    return Query(_ALERT_SERIES, parameters)


# -- risk (span_scores, with the scored spans for context) ---------------------------------------

_RISK_HISTOGRAM = f"""
SELECT
    toUInt32(least(greatest(floor(risk_score * {HISTOGRAM_BINS}), 0), {HISTOGRAM_BINS - 1})) AS bin,
    count() AS scored,
    sum(sampling_weight) AS weighted,
    countIf(injection_flag = 1) AS injection_flagged
FROM span_scores FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
GROUP BY bin
ORDER BY bin
"""  # noqa: S608

_RISK_SERIES = f"""
SELECT
    {_bucket_ms("timestamp")} AS bucket_ms,
    count() AS scored,
    avg(risk_score) AS mean_risk,
    quantile(0.95)(risk_score) AS p95_risk
FROM span_scores FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
GROUP BY bucket_ms
ORDER BY bucket_ms
LIMIT 10000
"""  # noqa: S608

_RISKIEST = f"""
SELECT
    toUnixTimestamp64Milli(timestamp) AS timestamp_ms,
    trace_id,
    span_id,
    toString(tenant) AS tenant,
    toString(service_name) AS service_name,
    toString(request_model) AS request_model,
    toString(prompt_template_version) AS prompt_template_version,
    risk_score,
    support_min,
    support_mean,
    answer_context_similarity,
    answer_question_similarity,
    has_context,
    injection_score,
    injection_flag,
    toString(model_version) AS model_version,
    substring(details, 1, 20000) AS details
FROM span_scores FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
    AND risk_score >= {{min_risk:Float64}}
ORDER BY risk_score DESC, timestamp DESC
LIMIT {{limit:UInt32}}
"""  # noqa: S608

# The context of scored spans: what was asked, what came back, and the retrieved documents.
_SPAN_CONTEXT = """
SELECT
    trace_id,
    span_id,
    name,
    substring(prompt_text, 1, 4000) AS prompt_text,
    substring(completion_text, 1, 4000) AS completion_text,
    substring(retrieved_documents, 1, 8000) AS retrieved_documents,
    toString(status) AS status,
    duration_ms
FROM llm_spans FINAL
WHERE trace_id IN {trace_ids:Array(String)} AND span_id IN {span_ids:Array(String)}
    AND ({tenant:String} = '' OR tenant = {tenant:String})
LIMIT 1000
"""


def risk_histogram(time_range: TimeRange, filters: Filters) -> Query:
    return Query(_RISK_HISTOGRAM, {**time_range.parameters(), **filters.parameters()})


def risk_series(time_range: TimeRange, filters: Filters) -> Query:
    parameters = {**time_range.parameters(), **filters.parameters()}
    return Query(_RISK_SERIES, {**parameters, "step": time_range.step_seconds(minimum=60)})


def riskiest(time_range: TimeRange, filters: Filters, *, min_risk: float, limit: int) -> Query:
    parameters = {**time_range.parameters(), **filters.parameters()}
    return Query(_RISKIEST, {**parameters, "min_risk": min_risk, "limit": limit})


def span_context(trace_ids: list[str], span_ids: list[str], tenant: str) -> Query:
    return Query(_SPAN_CONTEXT, {"trace_ids": trace_ids, "span_ids": span_ids, "tenant": tenant})


# -- spans and traces ----------------------------------------------------------------------------

_SPAN_SEARCH = f"""
SELECT
    toUnixTimestamp64Milli(timestamp) AS timestamp_ms,
    trace_id,
    span_id,
    parent_span_id,
    name,
    toString(span_type) AS span_type,
    toString(status) AS status,
    toString(service_name) AS service_name,
    toString(tenant) AS tenant,
    toString(provider) AS provider,
    toString(request_model) AS request_model,
    duration_ms,
    input_tokens,
    output_tokens,
    if(isNull(cost_total), NULL, toFloat64(cost_total)) AS cost,
    priced,
    toString(error_type) AS error_type,
    user_id
FROM llm_spans FINAL
WHERE {_in_range("timestamp")} AND {_FILTERS}
    AND ({{trace_id:String}} = '' OR trace_id = {{trace_id:String}})
    AND ({{status:String}} = '' OR status = {{status:String}})
    AND ({{span_type:String}} = '' OR span_type = {{span_type:String}})
    AND duration_ms >= {{min_duration_ms:Float64}}
    AND ({{text:String}} = ''
        OR positionCaseInsensitiveUTF8(name, {{text:String}}) > 0
        OR positionCaseInsensitiveUTF8(prompt_text, {{text:String}}) > 0
        OR positionCaseInsensitiveUTF8(completion_text, {{text:String}}) > 0
        OR positionCaseInsensitiveUTF8(user_id, {{text:String}}) > 0)
ORDER BY timestamp DESC
LIMIT {{limit:UInt32}}
"""  # noqa: S608

_TRACE_SPANS = """
SELECT
    toUnixTimestamp64Milli(timestamp) AS timestamp_ms,
    toUnixTimestamp64Milli(end_timestamp) AS end_timestamp_ms,
    trace_id,
    span_id,
    parent_span_id,
    name,
    toString(kind) AS kind,
    toString(span_type) AS span_type,
    toString(status) AS status,
    status_message,
    toString(service_name) AS service_name,
    toString(service_version) AS service_version,
    toString(environment) AS environment,
    toString(tenant) AS tenant,
    toString(scope_name) AS scope_name,
    toString(convention) AS convention,
    toString(provider) AS provider,
    toString(operation) AS operation,
    toString(request_model) AS request_model,
    toString(response_model) AS response_model,
    duration_ms,
    time_to_first_token_ms,
    temperature,
    max_tokens,
    finish_reasons,
    input_tokens,
    output_tokens,
    cache_read_tokens,
    reasoning_tokens,
    priced,
    if(isNull(cost_total), NULL, toFloat64(cost_total)) AS cost,
    toString(currency) AS currency,
    toString(price_version) AS price_version,
    toString(unpriced_reason) AS unpriced_reason,
    user_id,
    session_id,
    toString(prompt_template_id) AS prompt_template_id,
    toString(prompt_template_version) AS prompt_template_version,
    substring(system_instructions, 1, 20000) AS system_instructions,
    substring(prompt_text, 1, 20000) AS prompt_text,
    substring(completion_text, 1, 20000) AS completion_text,
    substring(input_messages, 1, 50000) AS input_messages,
    substring(output_messages, 1, 50000) AS output_messages,
    substring(retrieved_documents, 1, 50000) AS retrieved_documents,
    substring(tool_calls, 1, 20000) AS tool_calls,
    toString(error_type) AS error_type,
    error_message,
    attributes,
    resource_attributes
FROM llm_spans FINAL
WHERE trace_id = {trace_id:String} AND ({tenant:String} = '' OR tenant = {tenant:String})
ORDER BY timestamp, span_id
LIMIT 2000
"""

_TRACE_SCORES = """
SELECT
    span_id,
    risk_score,
    support_min,
    injection_score,
    injection_flag,
    substring(details, 1, 20000) AS details
FROM span_scores FINAL
WHERE trace_id = {trace_id:String} AND ({tenant:String} = '' OR tenant = {tenant:String})
LIMIT 2000
"""

_FILTER_VALUES = f"""
SELECT
    groupUniqArray(100)(toString(service_name)) AS services,
    groupUniqArray(100)(toString(tenant)) AS tenants,
    groupUniqArrayIf(100)(toString(request_model), request_model != '') AS models
FROM llm_spans
WHERE {_in_range("timestamp")} AND {_TENANT_FILTER}
"""  # noqa: S608 (no FINAL: a duplicate span adds no new value)


def span_search(
    time_range: TimeRange,
    filters: Filters,
    *,
    trace_id: str = "",
    status: str = "",
    span_type: str = "",
    text: str = "",
    min_duration_ms: float = 0.0,
    limit: int,
) -> Query:
    parameters = {
        **time_range.parameters(),
        **filters.parameters(),
        "trace_id": trace_id,
        "status": status,
        "span_type": span_type,
        "text": text,
        "min_duration_ms": min_duration_ms,
        "limit": limit,
    }
    return Query(_SPAN_SEARCH, parameters)


def trace_spans(trace_id: str, tenant: str) -> Query:
    return Query(_TRACE_SPANS, {"trace_id": trace_id, "tenant": tenant})


def trace_scores(trace_id: str, tenant: str) -> Query:
    return Query(_TRACE_SCORES, {"trace_id": trace_id, "tenant": tenant})


def filter_values(time_range: TimeRange, tenant: str) -> Query:
    """The services, tenants and models seen in the range (of one tenant, when given)."""
    return Query(_FILTER_VALUES, {**time_range.parameters(), "tenant": tenant})
