"""init_transactions_patiently: a stage waits for a broker that is not ready for transactions.

The producer is an in-memory double that fails as librdkafka does; the stages' integration
tests start their transactional producers on the real broker.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from llmtap.kafka import init_transactions_patiently


class ProducerDouble:
    def __init__(self, failures: list[KafkaError]) -> None:
        self.failures = failures
        self.calls = 0

    def init_transactions(self, timeout: float) -> None:
        self.calls += 1
        if self.failures:
            time.sleep(timeout)  # librdkafka gives up after the call's timeout
            raise KafkaException(self.failures.pop(0))


def _timed_out() -> KafkaError:
    return KafkaError(
        KafkaError._TIMED_OUT,
        "Timed out waiting for operation to finish, retry call to resume",
        retriable=True,
    )


def test_a_coordinator_still_loading_is_waited_for() -> None:
    loading = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading", retriable=True)
    producer = ProducerDouble([_timed_out(), loading, _timed_out()])
    init_transactions_patiently(producer, "normalizer", attempt_seconds=0.01)
    assert producer.calls == 4


def test_a_fatal_error_is_not_retried() -> None:
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    producer = ProducerDouble([fenced])
    with pytest.raises(KafkaException, match="fenced"):
        init_transactions_patiently(producer, "normalizer", attempt_seconds=0.01)
    assert producer.calls == 1


def test_the_wait_ends_at_its_deadline_with_the_last_error() -> None:
    producer = ProducerDouble([_timed_out() for _ in range(1000)])
    started = time.monotonic()
    with pytest.raises(KafkaException, match="retry call to resume"):
        init_transactions_patiently(producer, "drift", wait_seconds=1.2, attempt_seconds=0.01)
    assert 1.2 <= time.monotonic() - started < 5
    assert 2 <= producer.calls <= 5  # a pause between attempts: no busy loop


def test_a_stopping_stage_does_not_keep_waiting() -> None:
    stop = threading.Event()
    stop.set()
    producer = ProducerDouble([_timed_out() for _ in range(1000)])
    with pytest.raises(KafkaException):
        init_transactions_patiently(producer, "risk", stop, attempt_seconds=0.01)
    assert producer.calls == 1
