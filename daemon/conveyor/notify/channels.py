"""How one message is posted to each kind of channel (httpx, with a timeout; the caller retries).

webhook: a JSON document `{"repo", "events": [...], "summary"}`; ntfy: the text as the body with
Title/Tags/Click headers (ntfy's publish API); slack: `{"text": ...}`, which Slack, Mattermost and
Rocket.Chat incoming webhooks accept. A channel's token goes in the Authorization header only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from conveyor.config.models import ChannelSettings
from conveyor.notify.events import Event, summary


def request_of(channel: ChannelSettings, events: Sequence[Event], repo: str,
               env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of `httpx.Client.post` for one message about `events` (one, or a batch)."""
    text = events[0].headline(repo) if len(events) == 1 else summary(events, repo)
    headers: dict[str, str] = {}
    token = env.get(channel.token_env) if channel.token_env else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if channel.kind == "ntfy":
        first = events[0]
        headers.update({"Title": f"Conveyor: {first.kind.replace('_', ' ')}" if len(events) == 1
                        else f"Conveyor: {len(events)} task events",
                        "Tags": ",".join(sorted({event.kind for event in events}))})
        if len(events) == 1 and first.pr_url:
            headers["Click"] = first.pr_url
        return {"content": text.encode("utf-8"), "headers": headers}
    if channel.kind == "slack":
        links = [f"<{event.pr_url}|pull request of {event.task_id}>" for event in events[:10] if event.pr_url]
        return {"json": {"text": text + ("\n" + "\n".join(links) if links else "")}, "headers": headers}
    return {"json": {"repo": repo, "summary": text, "events": [event.as_dict() for event in events]},
            "headers": headers}


def post(client: httpx.Client, channel: ChannelSettings, request: dict[str, Any]) -> None:
    """Send one message; raises httpx.HTTPError (including a non-2xx answer) for the caller to retry."""
    response = client.post(channel.url, **request)
    response.raise_for_status()
