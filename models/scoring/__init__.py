"""Online models of retention-scorer: churn risk, cart abandonment, next order and CLV.

Pure Python over the engine's state and features (no Kafka or Faust import). The engine
talks to one :class:`ModelHub` through the ``Scorer`` protocol of ``docs/ARCHITECTURE.md``;
see ``docs/MODELS.md`` for the models, their labels, cold start and evaluation.

>>> from models.state import CustomerState
>>> hub = ModelHub(HubConfig(snapshot_key=b"k"))
>>> s = CustomerState(key="v1", anonymous=True)
>>> hub.score("v1", s, {"orders": 0}, 0.0)["churn_risk"] is None
True
"""

from .btyd import (BGNBDParams, GammaGammaParams, expected_purchases, expected_spend,
                   fit_bgnbd, fit_gamma_gamma, p_alive, prob_no_purchase)
from .hub import HubConfig, ModelHub, SnapshotError
from .metrics import LiveMetrics

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "HubConfig",
    "LiveMetrics",
    "ModelHub",
    "SnapshotError",
    "expected_purchases",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "p_alive",
    "prob_no_purchase",
]
