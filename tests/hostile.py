"""Hypothesis strategies for hostile request bodies, shared by the parser's fuzz test and
the one through the real server."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ENDPOINTS = ("chat/completions", "completions", "embeddings")
# The fields the gateway reads, and one it passes through.
REQUEST_FIELDS = st.sampled_from(
    [
        "model",
        "messages",
        "prompt",
        "input",
        "stream",
        "stream_options",
        "n",
        "best_of",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "temperature",
    ]
)


def json_values(max_leaves: int) -> st.SearchStrategy[Any]:
    """Any JSON value, with integers far past DynamoDB's 38 digits."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**45), max_value=10**45)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
