from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictLTVRequest(_message.Message):
    __slots__ = ("customer_id", "spend", "engagement_score", "currency", "as_of")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SPEND_FIELD_NUMBER: _ClassVar[int]
    ENGAGEMENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    spend: float
    engagement_score: float
    currency: str
    as_of: str
    def __init__(self, customer_id: _Optional[str] = ..., spend: _Optional[float] = ..., engagement_score: _Optional[float] = ..., currency: _Optional[str] = ..., as_of: _Optional[str] = ...) -> None: ...

class PredictLTVResponse(_message.Message):
    __slots__ = ("customer_id", "ltv", "ltv_micros", "p_purchase", "ltv_p10", "ltv_p50", "ltv_p90", "horizon_days", "currency", "model_version", "error")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LTV_FIELD_NUMBER: _ClassVar[int]
    LTV_MICROS_FIELD_NUMBER: _ClassVar[int]
    P_PURCHASE_FIELD_NUMBER: _ClassVar[int]
    LTV_P10_FIELD_NUMBER: _ClassVar[int]
    LTV_P50_FIELD_NUMBER: _ClassVar[int]
    LTV_P90_FIELD_NUMBER: _ClassVar[int]
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    ltv: str
    ltv_micros: int
    p_purchase: float
    ltv_p10: str
    ltv_p50: str
    ltv_p90: str
    horizon_days: int
    currency: str
    model_version: str
    error: str
    def __init__(self, customer_id: _Optional[str] = ..., ltv: _Optional[str] = ..., ltv_micros: _Optional[int] = ..., p_purchase: _Optional[float] = ..., ltv_p10: _Optional[str] = ..., ltv_p50: _Optional[str] = ..., ltv_p90: _Optional[str] = ..., horizon_days: _Optional[int] = ..., currency: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class PredictLTVBatchRequest(_message.Message):
    __slots__ = ("customers",)
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[PredictLTVRequest]
    def __init__(self, customers: _Optional[_Iterable[_Union[PredictLTVRequest, _Mapping]]] = ...) -> None: ...

class PredictLTVBatchResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[PredictLTVResponse]
    def __init__(self, predictions: _Optional[_Iterable[_Union[PredictLTVResponse, _Mapping]]] = ...) -> None: ...
