"""MQTT topic filters, matched the way a broker matches them (MQTT 3.1.1 §4.7, MQTT 5 §4.7).

The pipeline routes a message to its format by the subscription filter it matches; that needs
only the matching rule, not an MQTT client, so the pipeline does not import paho.
"""

from __future__ import annotations


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` matches ``topic_filter`` (``+`` one level, ``#`` the rest).

    As a broker does, a filter starting with a wildcard never matches a topic starting with
    ``$`` (``$SYS/...``), and ``a/#`` also matches ``a`` itself.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want = topic_filter.split("/")
    have = topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return i == len(want) - 1
        if i >= len(have):
            return False
        if level != "+" and level != have[i]:
            return False
    return len(want) == len(have)
