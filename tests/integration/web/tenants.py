"""Two tenants' rows in every table the dashboard and `llmtap query` read, each easy to spot.

Everything of tenant "alpha" carries the word alpha and everything of tenant "bravo" the word
bravo (service, model, user, prompt, rule, drift feature), and each tenant's trace and span ids
are its own hex pattern, so a test can search an answer's text for the other tenant. One trace
id is used by both tenants, as a client of one tenant could do on purpose: reading it must still
show one tenant's spans only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from llmtap.sinks.clickhouse.migrations import Migrator

SHARED_TRACE_ID = "5" * 32
TABLES = (
    "llm_spans",
    "span_scores",
    "llm_aggregates",
    "llm_user_aggregates",
    "drift_results",
    "alerts",
)


@dataclass(frozen=True)
class Tenant:
    name: str  # also the marker word in every text value
    digit: str  # its trace and span ids repeat this hex digit

    @property
    def trace_id(self) -> str:
        return self.digit * 32

    @property
    def span_ids(self) -> list[str]:
        return [self.digit * 15 + str(index) for index in range(4)]

    def markers(self) -> list[str]:
        """Strings that only this tenant's rows hold."""
        return [self.name, self.trace_id, *self.span_ids]


ALPHA = Tenant("alpha", "a")
BRAVO = Tenant("bravo", "b")


def insert(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    client.insert(table, [[row[name] for name in names] for row in rows], column_names=names)


def seed_tenants(client: Any, database: str) -> datetime:
    """Migrate, then insert both tenants' rows; returns the rows' minute (recent: TTL)."""
    Migrator(client, database).apply()
    minute = datetime.fromtimestamp(int(time.time()) // 60 * 60 - 600, UTC).replace(tzinfo=None)
    for tenant in (ALPHA, BRAVO):
        _seed(client, tenant, minute)
    return minute


def _seed(client: Any, tenant: Tenant, minute: datetime) -> None:
    word = tenant.name
    common = {
        "tenant": word,
        "service_name": f"svc-{word}",
        "request_model": f"model-{word}",
        "prompt_template_version": f"pv-{word}",
    }
    root, llm, tool, shared = tenant.span_ids
    spans = []
    for index, (trace_id, span_id, parent, span_type) in enumerate(
        [
            (tenant.trace_id, root, "", "other"),
            (tenant.trace_id, llm, root, "llm"),
            (tenant.trace_id, tool, root, "tool"),
            (SHARED_TRACE_ID, shared, "", "llm"),
        ]
    ):
        start = minute + timedelta(seconds=index)
        spans.append(
            {
                **common,
                "timestamp": start,
                "end_timestamp": start + timedelta(milliseconds=500),
                "duration_ms": 500.0,
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent,
                "name": f"chat {word}",
                "status": "error" if index == 1 else "ok",
                "status_message": f"status {word}",
                "environment": "prod",
                "span_type": span_type,
                "provider": "openai",
                "operation": "chat",
                "response_model": f"model-{word}",
                "input_tokens": 100,
                "output_tokens": 10,
                "priced": 1,
                "cost_total": Decimal("0.01"),
                "currency": "USD",
                "user_id": f"user-{word}",
                "session_id": f"session-{word}",
                "prompt_text": f"prompt {word}",
                "completion_text": f"answer {word}",
                "retrieved_documents": json.dumps([{"id": f"doc-{word}"}]),
                "error_type": f"Error{word}" if index == 1 else "",
                "attributes": {"marker": word},
                "resource_attributes": {"service.name": f"svc-{word}"},
            }
        )
    insert(client, "llm_spans", spans)
    insert(
        client,
        "span_scores",
        [
            {
                **common,
                "timestamp": minute + timedelta(seconds=1),
                "trace_id": trace_id,
                "span_id": span_id,
                "risk_score": 0.9,
                "support_min": 0.1,
                "answer_context_similarity": 0.5,
                "answer_question_similarity": 0.5,
                "has_context": 1,
                "injection_score": 0.9,
                "injection_flag": 1,
                "sampling_weight": 1.0,
                "model_version": "test",
                "details": json.dumps({"reason": word}),
            }
            for trace_id, span_id in ((tenant.trace_id, llm), (SHARED_TRACE_ID, shared))
        ],
    )
    insert(
        client,
        "llm_aggregates",
        [
            {
                **common,
                "window_start": minute.replace(minute=0) if seconds == 3600 else minute,
                "window_seconds": seconds,
                "environment": "prod",
                "provider": "openai",
                "operation": "chat",
                "requests": 2,
                "errors": 1,
                "unpriced_requests": 0,
                "input_tokens": 200,
                "output_tokens": 20,
                "currency": "USD",
                "cost_total": Decimal("0.02"),
                "version": 1,
            }
            for seconds in (60, 3600)
        ],
    )
    insert(
        client,
        "llm_user_aggregates",
        [
            {
                "window_start": minute.replace(minute=0) if seconds == 3600 else minute,
                "window_seconds": seconds,
                "tenant": word,
                "user_id": f"user-{word}",
                "requests": 2,
                "errors": 1,
                "unpriced_requests": 0,
                "input_tokens": 200,
                "output_tokens": 20,
                "currency": "USD",
                "cost_total": Decimal("0.02"),
                "version": 1,
            }
            for seconds in (60, 3600)
        ],
    )
    insert(
        client,
        "drift_results",
        [
            {
                **common,
                "window_start": minute - timedelta(minutes=5),
                "window_end": minute + timedelta(minutes=offset),
                "environment": "prod",
                "provider": "openai",
                "feature": f"feature-{word}",
                "detector": "mmd",
                "statistic": 0.3,
                "p_value": 0.001,
                "threshold": 0.05,
                "drifted": 1,
                "reference_size": 500,
                "current_size": 100,
                "evidence": json.dumps({"examples": [f"example {word}"]}),
                "version": 1,
            }
            for offset in (1, 2)
        ],
    )
    insert(
        client,
        "alerts",
        [
            {
                "fired_at": minute + timedelta(minutes=1),
                "tenant": word,
                "rule_id": rule,
                "severity": "critical",
                "state": "firing",
                "group_key": f"tenant={word}",
                "labels": {"tenant": word},
                "value": 12.5,
                "threshold": 10.0,
                "message": f"{word} spent too much",
                "delivery_status": "delivered",
                "delivery_attempts": 1,
                "delivery_error": "",
                "dedup_key": f"{rule}:{word}",
                "version": 1,
            }
            for rule in (f"cost.{word}", f"drift.{word}")
        ],
    )


def row_counts(client: Any) -> dict[str, int]:
    return {
        table: int(client.command(f"SELECT count() FROM {table}"))  # noqa: S608 (constant names)
        for table in TABLES
    }
