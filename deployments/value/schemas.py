"""SyncValue's request and response models at the HTTP edge; one customer and its prediction
are the use cases' own models (kiki.value.service)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kiki.value.service import Customer, Prediction, PredictionError
from kiki.value.transactions import TransactionIn


class CustomerBatch(BaseModel):
    customers: list[Customer] = Field(min_length=1, max_length=10_000)


class Predictions(BaseModel):
    predictions: list[Prediction | PredictionError]


class TransactionBatch(BaseModel):
    transactions: list[TransactionIn] = Field(min_length=1, max_length=10_000)


class TransactionsLoaded(BaseModel):
    received: int
    inserted: int
    duplicates: int
    suppressed: int = Field(description="rows of customers erased at their request, dropped")
