"""The event bus: events derived from committed transactions, and durable subscriptions."""

from .events import Event, EventSource, Position
from .subscriptions import Bus, Subscription

__all__ = ["Bus", "Event", "EventSource", "Position", "Subscription"]
