"""The history exporter's queries and its retry policy (HTTP: tests/e2e/test_cli_history.py)."""

from __future__ import annotations

import pytest

from app.history_export import _retry_after, salesforce_soql

MARCH = 1_740_787_200_000  # 2025-03-01T00:00:00Z


def test_the_field_history_query_of_each_kind_of_object() -> None:
    assert salesforce_soql("Contact", MARCH) == (
        "SELECT Id, ContactId, Field, DataType, OldValue, NewValue, CreatedById, CreatedDate "
        "FROM ContactHistory WHERE CreatedDate >= 2025-03-01T00:00:00Z ORDER BY CreatedDate")
    opportunity, custom = salesforce_soql("Opportunity", MARCH), salesforce_soql("Invoice__c", MARCH)
    assert "OpportunityId" in opportunity and "FROM OpportunityFieldHistory" in opportunity
    assert "ParentId" in custom and "FROM Invoice__History" in custom
    with pytest.raises(ValueError, match="not a Salesforce object name"):
        salesforce_soql("Contact WHERE Id != null", MARCH)  # nothing but a name reaches the query


def test_retry_after_is_honoured_and_bounded_and_backoff_doubles() -> None:
    assert _retry_after("3", 0) == 3.0 and _retry_after("3600", 0) == 60.0 and _retry_after("soon", 1) == 1.0
    assert [_retry_after(None, n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert _retry_after(None, 10) == 30.0
